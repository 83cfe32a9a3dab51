"""The DNS-rebinding guard: which `Host` headers the proxy answers.

A web page can rebind its own name to 127.0.0.1 and then read the proxy with the user's
key: the browser sends the page's name in `Host`. So only names that cannot be rebound are
served: IP literals (a rebinding page never has one as its origin), `localhost` and
`*.localhost` (browsers resolve those to loopback themselves), and the names listed in
`server.allowed_hosts` (`.example.com` matches its subdomains; `*` turns the guard off).
A request with no `Host` (HTTP/1.0 tools) is served.
"""

from __future__ import annotations

import ipaddress

SEEN_HOSTS = 64  # allowed Host values remembered (more only cost the parse again)


class HostGuard:
    def __init__(self, allowed_hosts: list[str]) -> None:
        names = [h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()]
        self.everything = "*" in names
        self.exact = {n for n in names if not n.startswith(".")}
        self.suffixes = tuple(n for n in names if n.startswith("."))
        # Host values already allowed (a client sends the same one every time), up to a bound:
        # the parse below, an IP literal's most of all, is a cost on every request's path.
        self._seen: set[bytes] = set()

    def allows(self, host_header: bytes | None) -> bool:
        if host_header is None or self.everything or host_header in self._seen:
            return True
        allowed = self._allows(host_header)
        if allowed and len(self._seen) < SEEN_HOSTS:
            self._seen.add(host_header)
        return allowed

    def _allows(self, host_header: bytes) -> bool:
        host = host_header.decode("latin-1").strip().lower()
        if host.startswith("["):  # [v6]:port
            host = host[1 : host.find("]")] if "]" in host else host
        elif host.count(":") == 1:
            host = host.rsplit(":", 1)[0]
        host = host.rstrip(".")
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            pass
        return host in self.exact or (bool(self.suffixes) and host.endswith(self.suffixes))


def is_loopback(host: str) -> bool:
    """Whether a listening address is this machine only (`serve` refuses others without keys)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
