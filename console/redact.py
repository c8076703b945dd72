"""Secrets never reach a log line or a screen.

One process-wide :data:`REDACTOR`: the AWS client registers the credentials it resolved, the
environment's are registered at import, and every log line and UI text passes through it.
Access key ids are masked by shape as well, wherever they come from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA|ANPA|ANVA|AGPA)[A-Z0-9]{12,}\b")
_ENV_SECRETS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
)
MASK = "****"


class Redactor:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        # Short strings (the demo's "demo" keys) would mask ordinary words.
        fresh = {s for s in secrets if s and len(s) >= 8} - set(self._secrets)
        if fresh:
            self._secrets = sorted({*self._secrets, *fresh}, key=len, reverse=True)

    def add_environment(self, env: Mapping[str, str]) -> None:
        self.add(*(env.get(name) for name in _ENV_SECRETS))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _KEY_ID.sub(lambda m: m.group(0)[:4] + MASK, text)


REDACTOR = Redactor()
REDACTOR.add_environment(os.environ)
