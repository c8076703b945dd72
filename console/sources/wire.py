"""The read path past botocore's response pipeline: GetRecords and the shard listings.

botocore turns a GetRecords response into Python through a generic, model-driven parser: for
every field of every record it looks up the shape, dispatches on its type and calls a handler.
That costs about 8 us a record; decoding the same bytes with orjson costs about 0.5 us (measured:
``python -m bench.profile``). So the calls that carry records or whole shard lists go here:

* the request is the one botocore would send, but for its per-invocation headers
  (amz-sdk-invocation-id, amz-sdk-request, Lambda's trace id) and its parameter validation (the
  sources build the parameters): the client's endpoint (its ruleset resolved for the call's
  parameters), botocore's own signer, with the client's credential chain (profiles, SSO, role
  chains and their refresh work as they do for every other call);
* it travels through the client's own HTTP session (its pool, proxies, TLS settings, timeouts),
  after the client's ``before-send`` event, the seam where faults are injected, so a fault
  reaches both read paths the same way;
* a 2xx body is decoded with orjson into plain dicts; the sources build their values from them
  directly (base64 decoded at once: the processor nearly always reads the data). A 2xx body that
  is not a JSON object is retried (HTTP 502);
* an error response becomes the ``ClientError`` botocore would raise, so the one ``classify``
  maps it for both paths.

``--read-path botocore`` keeps the old path (the client's methods) selectable.
"""

from __future__ import annotations

import http.client
from typing import Any

import orjson

READ_PATHS = ("fast", "botocore")


class Wire:
    """Signed JSON calls on an open aiobotocore client's endpoint, signer and HTTP session."""

    def __init__(self, client: Any) -> None:
        from botocore.hooks import first_non_none_response

        model = client.meta.service_model
        self._client = client
        self._model = model
        self._target = str(model.metadata["targetPrefix"])
        self._content_type = f"application/x-amz-json-{model.metadata['jsonVersion']}"
        self._service_id = model.service_id.hyphenize()
        self._first = first_non_none_response
        creator = getattr(client, "_user_agent_creator", None)
        self._user_agent = creator.to_string() if creator is not None else None

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One call; the decoded body of a 2xx answer, or the botocore exception the same
        answer raises through the client's methods."""
        from botocore.awsrequest import AWSRequest

        client = self._client
        context: dict[str, Any] = {}
        url, extra, _ = await client._resolve_endpoint_ruleset(
            self._model.operation_model(operation), params, context
        )
        headers = {
            "X-Amz-Target": f"{self._target}.{operation}",
            "Content-Type": self._content_type,
            **extra,
        }
        if self._user_agent is not None:
            headers["User-Agent"] = self._user_agent
        request = AWSRequest("POST", url, data=orjson.dumps(params), headers=headers)
        request.context = context
        await client._request_signer.sign(operation, request)
        prepared = request.prepare()
        injected = await client.meta.events.emit(
            f"before-send.{self._service_id}.{operation}", request=prepared
        )
        response = self._first(injected)
        if response is None:
            response = await client._endpoint.http_session.send(prepared)
        body = await response.content
        if response.status_code >= 300:
            raise client_error(operation, response.status_code, response.headers, body)
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            decoded = None
        if not isinstance(decoded, dict):  # retried, as botocore's parse of it would be
            raise client_error(operation, 502, {}, b"")
        return decoded


def client_error(operation: str, status: int, headers: Any, body: bytes) -> Exception:
    """The ClientError botocore's JSON protocol parser makes of an error answer: the code from
    ``__type`` (after any ``namespace#``) or the ``x-amzn-ErrorType`` header, the message from
    ``message`` or ``Message``; without them, the status and its reason phrase."""
    from botocore.exceptions import ClientError

    try:
        doc = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = str(doc.get("__type") or headers.get("x-amzn-errortype") or "")
    code = code.rsplit("#", 1)[-1].split(":", 1)[0] or str(status)
    message = str(doc.get("message") or doc.get("Message") or "")
    if not message and not doc:  # as botocore: the status's reason phrase
        message = http.client.responses.get(status, "")
    error: Exception = ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )
    return error
