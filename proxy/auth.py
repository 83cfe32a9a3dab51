"""API keys: where a request carries one, whether it is accepted, and the owner hash it maps to."""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from proxy.errors import AuthenticationRequired

#: With no `auth.api_keys`, any key is accepted, so the only mistake is sending none: say where it goes.
MISSING_KEY = "Missing API key: send any non-empty key in the X-API-Key header (or api-key, or Authorization: Bearer)"
#: With keys configured, whether the key was missing or wrong is not told apart.
INVALID_KEY = "Invalid or missing API key (X-API-Key, api-key or Authorization: Bearer)"


def request_key(request: Request) -> str | None:
    headers = request.headers  # case-insensitive
    key = headers.get("x-api-key") or headers.get("api-key")
    if not key:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = token
    key = (key or "").strip()
    return key or None


def owner_of(key: str) -> str:
    """The stored owner of a key's threads: a SHA-256 hash, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    def __init__(self, api_keys: list[str]) -> None:
        self._hashes = [owner_of(k) for k in api_keys]

    @property
    def open(self) -> bool:
        """No keys configured: any non-empty key is accepted."""
        return not self._hashes

    def accepts(self, request: Request) -> bool:
        """Whether the request carries a key this proxy accepts (any key, in the open mode)."""
        try:
            self.owner(request)
        except AuthenticationRequired:
            return False
        return True

    def guard_operations(self, request: Request) -> None:
        """The operator's endpoints (`/metrics`, `/health` in detail): open without configured
        keys, as before; with keys, they need one (they reveal paths, hosts and counters)."""
        if self._hashes:
            self.owner(request)

    def owner(self, request: Request) -> str:
        key = request_key(request)
        if key is None:
            raise AuthenticationRequired(INVALID_KEY if self._hashes else MISSING_KEY)
        owner = owner_of(key)
        if self._hashes and not any(hmac.compare_digest(owner, h) for h in self._hashes):
            raise AuthenticationRequired(INVALID_KEY)
        return owner
