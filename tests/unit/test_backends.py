"""The choice of an LM Studio host (a pure function of what is known of each), and the hosts' config."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from proxy import config as config_module
from proxy.backends import Backends, HostView, pick
from proxy.config import LMStudioConfig
from proxy.errors import BackendUnavailable, ConfigError


def host(loaded: str = "", downloaded: str = "", active: int = 0, up: bool = True) -> HostView:
    return HostView(up, frozenset(loaded.split()), frozenset(downloaded.split()), active)


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ([host(downloaded="m"), host(loaded="m", active=5)], 1),  # loaded beats downloaded, however busy
        ([host(loaded="m", active=2), host(loaded="m", active=1)], 1),  # then the fewest active
        ([host(loaded="m", active=1), host(loaded="m", active=1)], 0),  # then the configured order
        ([host(downloaded="m", active=3), host(downloaded="m", active=0)], 1),
        ([host(loaded="x"), host(downloaded="m")], 1),  # only one has it
        ([host(loaded="m", up=False), host(downloaded="m", active=9)], 1),  # down: skipped while another has it
        ([host(loaded="m", up=False), host(loaded="x")], 0),  # down, but nobody else has it: tried
        ([host(downloaded="m", up=False), host(loaded="m", up=False, active=1)], 1),  # loaded first, down or not
        ([host(loaded="x"), host(downloaded="y")], None),
        ([], None),
    ],
)
def test_pick(hosts: list[HostView], expected: int | None) -> None:
    assert pick(hosts, "m") == expected


def test_pick_matches_instance_identifiers() -> None:
    assert pick([host(loaded="other"), host(loaded="m m:2")], "m:2") == 1


def _backends(*names: str, retry_max: float = 30.0) -> Backends:
    return Backends(LMStudioConfig(retry_max_seconds=retry_max), list(names))


def test_choose_counts_active_streams_and_skips_down_hosts() -> None:
    backends = _backends("a:1", "b:2")
    a, b = backends.hosts
    a.loaded = b.loaded = [{"key": "m", "identifier": "m"}]
    assert backends.choose("m") is a
    backends.started(a)
    assert backends.choose("m") is b
    backends.started(b)
    backends.started(b)
    assert backends.choose("m") is a
    backends.ended(b)
    backends.ended(b)
    assert backends.choose("m") is b
    backends._mark_down(b, "gone")
    assert backends.choose("m") is a and [h["state"] for h in backends.statuses()] == ["unknown", "down"]
    with pytest.raises(BackendUnavailable, match="No LM Studio host has model 'nope'"):
        backends.choose("nope")


def test_the_catalogue_is_the_union_of_the_hosts_that_answer() -> None:
    backends = _backends("a:1", "b:2")
    a, b = backends.hosts
    a.loaded = [{"key": "m", "identifier": "m"}]
    a.downloaded = [{"key": "m"}, {"key": "x"}]
    b.loaded = [{"key": "m", "identifier": "m"}, {"key": "m", "identifier": "m:2"}]
    b.downloaded = [{"key": "m"}, {"key": "y"}]
    assert [m["identifier"] for m in backends.loaded()] == ["m", "m:2"]
    assert [m["key"] for m in backends.downloaded()] == ["m", "x", "y"]
    backends._mark_down(b, "gone")
    assert [m["key"] for m in backends.downloaded()] == ["m", "x"]
    assert backends.down_holding("y") == ["b:2"] and backends.down_holding("x") == []


def test_the_listing_sets_follow_each_new_listing_and_the_bridges_own_loads() -> None:
    backends = _backends("a:1", "b:2")
    a, b = backends.hosts
    a.loaded, a.downloaded = [{"key": "m", "identifier": "m:2"}], [{"key": "d"}]
    assert a.names() == (frozenset({"m", "m:2"}), frozenset({"d"}))
    assert a.names()[0] is a.names()[0]  # built once per listing
    assert backends.knows("m:2") and backends.knows("d") and not backends.knows("n")
    a.loaded = [{"key": "n", "identifier": "n"}]  # a new listing replaces the list
    assert a.names()[0] == {"n"} and backends.knows("n") and not backends.knows("m:2")
    a.bridge._handles["late"] = object()  # loaded through this bridge since the listing
    assert a.view().loaded == {"n", "late"} and backends.choose("late") is a
    assert not backends.knows("late")  # the catalogue knows listings only (it refreshes for others)
    b.downloaded = [{"key": "only-b"}]
    backends._mark_down(b, "gone")
    assert not backends.knows("only-b") and backends.down_holding("only-b") == ["b:2"]


def test_a_down_host_is_retried_at_doubling_intervals_up_to_the_maximum() -> None:
    backends = _backends("a:1", retry_max=3.0)
    (a,) = backends.hosts
    backends._mark_down(a, "refused")
    assert a.down_since is not None
    first = a.retry_at - a.down_since
    assert 1.0 <= first < 1.1  # 1 s after it went down
    backends._mark_down(a, "refused again")  # the same failure, reported twice: the same retry
    assert a.retry_at - a.down_since == pytest.approx(first, abs=0.05)
    a.down_since -= 2.0  # as if the outage had lasted 2 s: the next retry waits 2 s
    backends._mark_down(a, "refused")
    assert a.retry_at - time.monotonic() == pytest.approx(2.0, abs=0.1)
    a.down_since -= 60.0
    backends._mark_down(a, "refused")
    assert a.retry_at - time.monotonic() == pytest.approx(3.0, abs=0.1)  # at most retry_max_seconds
    backends._mark_up(a)
    assert a.state == "unknown" and a.error is None


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_hosts_in_the_config(tmp_path: Path) -> None:
    config = config_module.load(_write(tmp_path, '[lmstudio]\nhosts = ["a:1234", "b:1234"]\n'))
    assert config.lmstudio.host_list() == ["a:1234", "b:1234"]
    assert [b.name for b in Backends(config.lmstudio).hosts] == ["a:1234", "b:1234"]
    one = config_module.load(_write(tmp_path, '[lmstudio]\nhost = "http://a:1234/"\n'))
    assert [b.name for b in Backends(one.lmstudio).hosts] == ["a:1234"]  # `host` is a one-host list
    assert LMStudioConfig().host_list() == [""]  # nothing configured: discover LM Studio


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('host = "a:1"\nhosts = ["b:1"]', "keys 'lmstudio.host' and 'lmstudio.hosts' are both set"),
        ('hosts = ["a:1", "a:1"]', "names a:1 more than once"),
        ('hosts = ["a:1", " "]', "has an empty host"),
    ],
)
def test_host_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, f"[lmstudio]\n{text}\n")
    with pytest.raises(ConfigError) as info:
        config_module.load(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
