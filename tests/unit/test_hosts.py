"""The Host guard's decisions stay the same when it remembers the values it allowed."""

from __future__ import annotations

from proxy.hosts import SEEN_HOSTS, HostGuard


def test_a_remembered_host_is_allowed_and_a_refused_one_stays_refused() -> None:
    guard = HostGuard(["proxy.lan"])
    for _ in range(2):  # the second time from what the guard remembers
        assert guard.allows(b"127.0.0.1:8000")
        assert guard.allows(b"proxy.lan")
        assert not guard.allows(b"attacker.example:8000")
        assert not guard.allows(b"localhost.attacker.example")
    assert guard._seen == {b"127.0.0.1:8000", b"proxy.lan"}  # refusals are never remembered


def test_the_remembered_hosts_are_bounded() -> None:
    guard = HostGuard([])
    hosts = [f"10.0.{i // 256}.{i % 256}:8000".encode() for i in range(SEEN_HOSTS * 2)]
    assert all(guard.allows(h) for h in hosts)
    assert all(guard.allows(h) for h in hosts)  # past the bound: parsed again, still allowed
    assert len(guard._seen) == SEEN_HOSTS
