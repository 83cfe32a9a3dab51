"""Connections that send nothing, or never finish a request, cannot lock clients out."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import KEY, Harness, StreamReader, assert_well_terminated, make_config, wait_until

IDLE_SOCKETS = 1100
NOFILE = 1024  # a common default `ulimit -n`


def _request_head(method: str, path: str, length: int | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
    if length is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    return (head + "\r\n").encode()


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the proxy sends until it closes the connection (the timeout only bounds a failure)."""
    sock.settimeout(60)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_header_and_body_timeouts(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(server={"header_timeout_seconds": 0.3, "body_timeout_seconds": 0.3}))
    with (
        socket.create_connection(("127.0.0.1", h.server.port)) as silent,
        socket.create_connection(("127.0.0.1", h.server.port)) as slow_headers,
        socket.create_connection(("127.0.0.1", h.server.port)) as slow_body,
    ):
        slow_headers.sendall(b"GET /v1/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow_body.sendall(_request_head("POST", "/v1/threads", length=100) + b'{"title": ')
        assert _until_closed(silent) == b""  # nothing was asked: nothing to answer
        assert _until_closed(slow_headers) == b""
        reply = _until_closed(slow_body)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), reply
    error = json.loads(body)["error"]
    assert (error["code"], error["status"], error["type"]) == ("REQUEST_TIMEOUT", 408, "client_error")
    assert f"x-request-id: {error['trace_id']}".encode() in head
    with h.client() as client:  # and nothing was stored
        assert client.get("/v1/threads").json()["data"] == []


def test_streams_and_keep_alive_outlast_the_timeouts(make_harness: Any) -> None:
    # The timers run only while the proxy waits for a request, never while it answers one,
    # and a kept-alive connection is uvicorn's keep-alive timer's business.
    config = make_config(server={"header_timeout_seconds": 0.2, "body_timeout_seconds": 0.2})
    h: Harness = make_harness(config, tokens_per_second=20.0)

    def local_port(response: httpx.Response) -> int:
        port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        return port

    with h.client() as client:
        first = client.get("/v1/threads")
        first_port = local_port(first)
        reader = StreamReader(h, {"inputs": [{"role": "user", "content": "slow [tokens=40]"}]})
        events = reader.join()  # two seconds of streaming, ten times the timeouts
        second = client.get("/v1/threads")
        second_port = local_port(second)
    assert assert_well_terminated(events)["event"] == "response.completed"
    assert first.status_code == second.status_code == 200
    assert first_port == second_port  # the same connection, idle all that time


@pytest.fixture
def many_sockets() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE_SOCKETS + 300:
        pytest.skip(f"this test opens {IDLE_SOCKETS} sockets; the open-file limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, IDLE_SOCKETS + 300), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class LimitedProxy:
    """`python -m proxy serve` under `prlimit --nofile=1024`, as a service manager might start it."""

    def __init__(self, sim: Any, db: Path, port: int, config: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        command = [sys.executable, "-m", "proxy", "serve", "--lmstudio", sim.host_port, "--port", str(port)]
        self.proc = subprocess.Popen(
            ["prlimit", f"--nofile={NOFILE}:{NOFILE}", *command, "--database", str(db), "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=30)

    def _answers(self) -> bool:
        assert self.proc.poll() is None, "the proxy exited"
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def test_idle_sockets_do_not_lock_clients_out(
    many_sockets: None, tmp_path: Path, simulator_factory: Any, free_port: Any
) -> None:
    # Timers far longer than the test: only the connection cap can make room for real clients.
    config = tmp_path / "proxy.toml"
    config.write_text("[server]\nheader_timeout_seconds = 600.0\nbody_timeout_seconds = 600.0\n")
    if subprocess.run(["prlimit", "--version"], capture_output=True).returncode != 0:
        pytest.skip("prlimit (util-linux) is not installed")
    proxy = LimitedProxy(simulator_factory(), tmp_path / "db.sqlite3", free_port(), config)
    sockets: list[socket.socket] = []
    try:
        for i in range(IDLE_SOCKETS):  # a third send nothing, a third half their headers, a third half a body
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=60)
            sockets.append(sock)
            if i % 3 == 1:
                sock.sendall(b"GET /v1/threads HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            elif i % 3 == 2:
                sock.sendall(_request_head("POST", "/v1/threads", length=100) + b"{")
        with httpx.Client(base_url=proxy.url, headers={"X-API-Key": KEY}, timeout=60) as client:
            created = client.post("/v1/threads", json={"title": "served"})
            assert created.status_code == 201, created.text
            body = {"inputs": [{"role": "user", "content": "hi [tokens=5]"}], "stream": True}
            with client.stream("POST", "/v1/model/response", json=body) as response:
                text = response.read().decode()
            assert response.status_code == 200 and text.rstrip().endswith("data: [DONE]"), text[-200:]
        assert proxy.proc.poll() is None
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        proxy.stop()


TCP_INFO_DATA_SEGS_IN = 152  # struct tcp_info's tcpi_data_segs_in (Linux 4.6 and later)


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="counts TCP segments with Linux's TCP_INFO")
def test_a_json_answer_reaches_the_client_in_one_tcp_segment(make_harness: Any) -> None:
    """The head waits for the body (`serving._HeadersWithBody`): one write, one segment, one wake-up.

    uvicorn alone writes the status line and headers, then the body: two segments, and a client
    that reads the head before the body is there has to wait again for it.
    """
    h: Harness = make_harness(make_config())
    with socket.create_connection(("127.0.0.1", h.server.port)) as sock:
        sock.settimeout(60)
        for _ in range(3):  # each answer on the kept-alive connection
            before = _data_segments_in(sock)
            sock.sendall(_request_head("GET", "/v1/threads"))
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
            while len(body) < length:
                body += sock.recv(65536)
            assert json.loads(body)["data"] == []
            assert _data_segments_in(sock) - before == 1


def _data_segments_in(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < TCP_INFO_DATA_SEGS_IN + 4:
        pytest.skip("this kernel's TCP_INFO has no tcpi_data_segs_in")
    return int.from_bytes(info[TCP_INFO_DATA_SEGS_IN : TCP_INFO_DATA_SEGS_IN + 4], sys.byteorder)


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="counts TCP segments with Linux's TCP_INFO")
def test_a_streams_head_reaches_the_client_with_its_first_events(make_harness: Any) -> None:
    """The SSE head and the events ready when the handler answers leave in one write (with a
    live LM Studio those include the first token; the test asks only for the first event, which
    is there whatever LM Studio's pace)."""
    h: Harness = make_harness(make_config(), tokens_per_second=20.0)
    body = json.dumps({"inputs": [{"role": "user", "content": "Hello"}], "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", h.server.port)) as sock:
        sock.settimeout(60)
        sock.sendall(_request_head("POST", "/v1/model/response", length=len(body)) + body)
        received = b""
        while b"\r\n\r\n" not in received or b"\n\n" not in received.partition(b"\r\n\r\n")[2]:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200 ") and b"data: {" in received
        assert _data_segments_in(sock) == 1, received
