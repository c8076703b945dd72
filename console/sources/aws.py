"""What every AWS source shares: the aioboto3 session and client, and the error mapping.

Three choices made here matter for speed and for operators:

* botocore's own retries are off (one attempt). The engine retries with full jitter and shows the
  shard as ``failing`` with the reason while it does; hidden SDK retries would make a throttled
  shard look healthy and stall a stop for seconds.
* Timestamps are left as the epoch numbers the JSON protocols carry. botocore's default parser
  turns every ApproximateArrivalTimestamp into a tz-aware datetime, which is two thirds of the
  cost of parsing a GetRecords response (measured: 28k records/s/core with it, 90k without).
* Timestamps we send keep their milliseconds (AT_TIMESTAMP rewinds land where asked).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from console.sources.base import (
    CredentialsError,
    EndpointUnreachableError,
    ExpiredIteratorError,
    FatalSourceError,
    RetryableError,
    ShardNotFoundError,
    SourceError,
    StreamNotFoundError,
    TrimmedDataError,
)
from console.sources.seek import ANSWER_WITHIN
from console.sources.wire import Wire

Hook = tuple[str, Callable[..., Any]]

_THROTTLING = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)
_SERVER = frozenset(
    {
        "InternalFailure",
        "InternalFailureException",  # inside a SubscribeToShard event stream
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "IncompleteSignature",
        "AuthFailure",
    }
)
_ACCESS = frozenset({"AccessDeniedException", "AccessDenied", "KMSAccessDeniedException"})


@dataclass(frozen=True, slots=True)
class AwsSettings:
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    # Only the demo sets these (dummy keys for its loopback endpoint); users go through the
    # credential chain exactly as boto3 has it.
    access_key_id: str | None = None
    secret_access_key: str | None = None
    max_pool_connections: int = 64
    # "fast": GetRecords and the shard listings past botocore's parser (sources/wire.py);
    # "botocore": every call through the client's methods.
    read_path: str = "fast"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # GetShardIterator AT_TIMESTAMP is given this long before the time is found by reading the
    # shard instead (console.sources.seek): Kinesis answers at once, stock kinesalite may never.
    at_timestamp_within: float = ANSWER_WITHIN

    @property
    def location(self) -> str:
        return self.endpoint_url or self.region or "default region"


def _raw_timestamp(value: Any) -> Any:
    return value


def _millisecond_timestamps(serializer_kwargs: dict[str, Any], **_: Any) -> None:
    """Send timestamps (AT_TIMESTAMP) with milliseconds: botocore's default truncates to whole
    seconds, which turns "from this instant" into "from the start of this second"."""
    serializer_kwargs["timestamp_precision"] = "millisecond"


def make_session(settings: AwsSettings) -> Any:
    """An aioboto3 session on its own botocore session, so the parser setting stays ours."""
    import aioboto3
    from aiobotocore.session import AioSession
    from botocore.exceptions import ProfileNotFound

    core = AioSession()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_raw_timestamp
    )
    core.register("creating-serializer", _millisecond_timestamps)
    region = settings.region
    if (
        region is None
        and settings.endpoint_url is not None
        and not core.get_config_variable("region")
    ):
        # A local endpoint still needs a region to sign with; emulators default to this one.
        region = "us-east-1"
    try:
        return aioboto3.Session(
            botocore_session=core,
            profile_name=settings.profile,
            region_name=region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
        )
    except ProfileNotFound:
        raise CredentialsError(
            f"AWS profile '{settings.profile}' not found: check --profile or ~/.aws/config"
        ) from None


def client_config(settings: AwsSettings) -> Any:
    from aiobotocore.config import AioConfig

    from console import __version__

    return AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.max_pool_connections,
        user_agent_extra=f"shard-console/{__version__}",
    )


@contextlib.asynccontextmanager
async def open_client(service: str, settings: AwsSettings, hooks: Sequence[Hook] = ()) -> Any:
    """An aiobotocore client for ``service``; ``hooks`` are botocore event handlers, the seam
    where tests and ``--inject-faults`` put throttling, 5xx and dropped connections."""
    from botocore.exceptions import NoRegionError

    session = make_session(settings)
    try:
        cm = session.client(
            service, endpoint_url=settings.endpoint_url, config=client_config(settings)
        )
        client = await cm.__aenter__()
    except NoRegionError:
        raise CredentialsError(
            "no AWS region configured: pass --region or set AWS_REGION"
        ) from None
    except Exception as exc:
        raise classify(exc, f"creating the {service} client") from exc
    try:
        await _register_secrets(session)
        for event, handler in hooks:
            client.meta.events.register(event, handler)
        yield client
    finally:
        await cm.__aexit__(None, None, None)


class ClientSource:
    """What a source on one AWS client shares: open it on enter, close it on exit.
    ``async with Source(...) as source``."""

    service: str  # the botocore service name: "kinesis", "dynamodbstreams"
    stream: str  # display name
    retention_text = "the retention period"  # how a shard leaves the stream, for messages

    def __init__(self, settings: AwsSettings, hooks: Sequence[Hook] = ()) -> None:
        self.location = settings.location
        self.settings = settings  # region, profile, endpoint: what a lease table's client shares
        self._hooks = tuple(hooks)
        self._client: Any = None
        self._wire: Wire | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(
            open_client(self.service, self.settings, self._hooks)
        )
        self._stack = stack
        self._wire = Wire(self._client) if self.settings.read_path == "fast" else None
        return self

    async def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One read-path call (GetRecords, ListShards, DescribeStream): on the fast path past
        botocore's parser, with values as the JSON carries them (blobs in base64); otherwise
        through the client's method. Failures raise what the client would raise."""
        if self._wire is not None:
            return await self._wire.call(operation, params)
        from botocore import xform_name

        resp: dict[str, Any] = await getattr(self._client, xform_name(operation))(**params)
        return resp

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def _shard_iterator(self, shard_id: str, kwargs: dict[str, Any]) -> str:
        """GetShardIterator; a shard the stream no longer holds is a ShardNotFoundError."""
        try:
            resp = await self._client.get_shard_iterator(**kwargs)
        except Exception as exc:
            gone = ShardNotFoundError(
                f"shard {shard_id} is no longer in stream '{self.stream}' "
                f"(it left with {self.retention_text})"
            )
            raise classify(exc, f"getting an iterator for {shard_id}", gone) from exc
        return str(resp["ShardIterator"])

    @property
    def client(self) -> Any:
        """The open aiobotocore client, for calls beyond the read path (fan-out)."""
        return self._client

    def _where(self) -> str:
        """Where the stream was looked for, for "not found" messages."""
        region = self._client.meta.region_name if self._client is not None else "?"
        return self.settings.endpoint_url or f"region {region}"


async def _register_secrets(session: Any) -> None:
    """Whatever credentials the chain resolved (profile files included) are masked in every
    log line and screen from now on."""
    from console.redact import REDACTOR

    try:
        credentials = await session.get_credentials()
        if credentials is None:
            return
        frozen = await credentials.get_frozen_credentials()
    except Exception:  # the first API call reports credential problems with a better message
        return
    REDACTOR.add(frozen.access_key, frozen.secret_key, frozen.token)


def expect(resp: Any, key: str, action: str) -> Any:
    """``resp[key]``; an answer without it (a proxy's page, a cut body, ``{}``) is retried, never
    taken for "no more records" or "no shards"."""
    if not isinstance(resp, dict) or key not in resp:
        raise RetryableError(f"malformed answer while {action}: it has no {key}")
    return resp[key]


def classify(exc: BaseException, action: str, missing: SourceError | None = None) -> SourceError:
    """Map anything botocore or aiohttp raises to the class the engine acts on. ``missing`` is
    what a ResourceNotFoundException means where it was raised, in the operator's words (an
    unknown stream, a table, a shard gone with the retention)."""
    if isinstance(exc, SourceError):
        return exc
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        message = str(err.get("Message", "")).strip() or code
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        reason = f"{code} while {action}: {message}"
        if code == "ExpiredIteratorException":
            return ExpiredIteratorError(reason)
        if code == "TrimmedDataAccessException":
            return TrimmedDataError(reason)
        if code in _THROTTLING or status == 429:
            return RetryableError(reason, throttled=True)
        if code in _SERVER or status >= 500:
            return RetryableError(reason)
        if code in _CREDENTIALS:
            return CredentialsError(
                f"AWS rejected the credentials ({code}) while {action}: "
                "check AWS_PROFILE, --profile or the access keys"
            )
        if code in _ACCESS:
            return FatalSourceError(
                f"access denied while {action}: {message}; grant the IAM permission it names"
            )
        if code == "ResourceNotFoundException":
            return missing if missing is not None else StreamNotFoundError(reason)
        return FatalSourceError(reason)
    if isinstance(exc, bce.InvalidRegionError):
        return CredentialsError(
            f"{exc}: pass a region name such as eu-west-1 (--region, AWS_REGION, or the profile)"
        )
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return CredentialsError(
            "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or pass --profile"
        )
    if isinstance(exc, bce.CredentialRetrievalError | bce.TokenRetrievalError):
        return CredentialsError(f"could not load AWS credentials: {exc}")
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
        return EndpointUnreachableError(f"cannot reach the endpoint while {action}: {exc}")
    if isinstance(exc, bce.HTTPClientError | bce.ConnectionError):
        return RetryableError(f"connection error while {action}: {exc}")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError | OSError):
        return RetryableError(f"{type(exc).__name__} while {action}: {exc}".rstrip(": "))
    import aiohttp

    if isinstance(exc, aiohttp.ClientError):
        return RetryableError(f"connection error while {action}: {exc}")
    if isinstance(exc, bce.ParamValidationError):
        return FatalSourceError(f"invalid request while {action}: {exc}")
    # Unknown: most likely a bug. Retrying keeps the shard visible as failing with the reason,
    # instead of taking the whole run down or dropping anything.
    return RetryableError(f"unexpected {type(exc).__name__} while {action}: {exc}")
