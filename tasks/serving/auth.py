"""Bearer-token / API-key authentication of every route but ``/healthz``.

A request is let through when ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``)
holds one of the configured keys; otherwise it gets 401 before any of its body is read.
Keys are compared as SHA-256 digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from tasks.serving.limits import send_closing_error

OPEN_PATHS = frozenset({"/healthz"})


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class TokenAuth:
    """ASGI middleware: 401 unless the request carries one of ``keys``."""

    def __init__(self, app: ASGIApp, keys: Collection[str]) -> None:
        self.app = app
        self._digests = [_digest(k.encode()) for k in keys]

    def _presented(self, scope: Scope) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return value[7:].strip()
            if name == b"x-api-key":
                return value.strip()
        return None

    def _valid(self, key: bytes | None) -> bool:
        if not key:
            return False
        digest = _digest(key)
        ok = False
        for known in self._digests:  # no early exit: the time does not depend on the match
            ok |= hmac.compare_digest(digest, known)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = self._presented(scope)
        if self._valid(key):
            await self.app(scope, receive, send)
            return
        reason = "missing" if key is None else "invalid"
        await send_closing_error(
            send, 401, f"{reason} credentials: send 'Authorization: Bearer <token>' or "
                       "'X-API-Key: <key>'", extra=[(b"www-authenticate", b"Bearer")])
