"""A stalled server is a down server: bounded bodies, large bodies parsed off the loop.

``mlp serve`` runs in its own process (the test's client would otherwise share the
server's GIL). Small single-instance requests are timed alone, then while another thread
sends, over and over, a 100 MB body with ``Content-Length`` (413 before it is read) and a
100 MB chunked body (413 once 32 MiB have arrived): the small requests' p99 must stay
under 50 ms. Then it sends valid 10 MB batches (parsed in the offload process): no small
request may wait for a parse.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time

import httpx
import numpy as np
import orjson
import pytest

from tests.tasks.serving.conftest import REPO, ServerProcess

pytestmark = pytest.mark.slow

MB = 1024 * 1024
BIG = 100 * MB
PATH = "/v1/models/mnist:predict"


def send_raw(port: int, size: int, chunked: bool = False, payload: bytes | None = None):
    """POST ``size`` bytes (or ``payload``) over a raw socket, reading the answer meanwhile.

    Returns:
        (status, seconds from the first byte sent to the status line, bytes sent by then,
        response body).

    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = "Transfer-Encoding: chunked" if chunked else (
        f"Content-Length: {size if payload is None else len(payload)}")
    head = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{framing}\r\nConnection: close\r\n\r\n").encode()
    answer: dict = {}
    sent = [0]

    def read() -> None:
        data = b""
        try:
            while b"\r\n" not in data:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
            answer["t"] = time.perf_counter()
            answer["sent"] = sent[0]
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
        except OSError:
            pass
        answer["raw"] = data

    reader = threading.Thread(target=read)
    reader.start()
    t0 = time.perf_counter()
    chunk = b"[" + b"1," * (MB // 2 - 1) + b"1]"  # 1 MiB of JSON-ish bytes
    try:
        sock.sendall(head)
        if payload is not None:
            sock.sendall(payload)
        else:
            while sent[0] < size and "t" not in answer:
                piece = chunk if not chunked else b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sock.sendall(piece)
                sent[0] += len(chunk)
            if chunked and "t" not in answer:
                sock.sendall(b"0\r\n\r\n")
    except OSError:  # the server closed the connection after answering
        pass
    reader.join(timeout=60)
    sock.close()
    raw = answer.get("raw", b"")
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None
    body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
    return status, answer.get("t", time.perf_counter()) - t0, answer.get("sent"), body


def small_latencies(base: str, payload: bytes, seconds: float | None = None,
                    n: int | None = None) -> tuple[list[float], list[str]]:
    """Sequential single-instance predictions for ``seconds`` (or ``n`` of them)."""
    lat, errors = [], []
    deadline = time.perf_counter() + (seconds or 1e9)
    with httpx.Client(base_url=base, timeout=10,
                      headers={"Content-Type": "application/json"}) as client:
        while time.perf_counter() < deadline and (n is None or len(lat) < n):
            t0 = time.perf_counter()
            try:
                r = client.post(PATH, content=payload)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            lat.append(time.perf_counter() - t0)
    return lat, errors


def pct(values: list[float], p: float) -> float:
    return 1000 * float(np.percentile(values, p))


def _under_load(srv, small: bytes, senders: dict, seconds: float, pause: float = 0.5):
    """Small-request latencies while a thread runs each sender in turn, over and over."""
    results: dict[str, list] = {name: [] for name in senders}
    stop = threading.Event()

    def big_sender() -> None:
        while not stop.is_set():
            for name, send in senders.items():
                results[name].append(send())
                stop.wait(pause)

    sender = threading.Thread(target=big_sender)
    sender.start()
    try:
        loaded, errors = small_latencies(srv.base, small, seconds=seconds)
    finally:
        stop.set()
        sender.join(timeout=120)
    assert errors == []
    assert httpx.get(f"{srv.base}/healthz", timeout=5).status_code == 200
    return loaded, results


@pytest.fixture(scope="module")
def mnist_server(reg_settings, served_registry, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with ServerProcess(reg_settings, "--model", "mnist", log=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def small(digits):
    images, _ = digits
    return json.dumps({"instances": [images[0].astype(float).tolist()]}).encode()


def test_100mb_bodies_get_413_at_once_and_small_requests_keep_p99_under_50ms(
        mnist_server, small):
    srv = mnist_server
    small_latencies(srv.base, small, n=50)  # warm-up
    alone, errors = small_latencies(srv.base, small, n=300)
    assert errors == []
    loaded, results = _under_load(srv, small, {
        "length": lambda: send_raw(srv.port, BIG),
        "chunked": lambda: send_raw(srv.port, BIG, chunked=True)}, seconds=5, pause=1.0)
    figures = {
        "alone_p50_ms": pct(alone, 50), "alone_p99_ms": pct(alone, 99),
        "loaded_p50_ms": pct(loaded, 50), "loaded_p99_ms": pct(loaded, 99),
        "loaded_max_ms": 1000 * max(loaded),
        "small_requests_loaded": len(loaded), "big_bodies": len(results["length"]),
        "to_413_content_length_ms": pct([r[1] for r in results["length"]], 50),
        "to_413_chunked_ms": pct([r[1] for r in results["chunked"]], 50),
        "sent_before_413_mb": max(r[2] for r in results["length"]) / MB,
    }
    print("\n100 MB bodies:", json.dumps(figures))
    for status, seconds, _sent, body in results["length"] + results["chunked"]:
        assert status == 413, body
        assert "exceeds the limit of 33554432 bytes" in orjson.loads(body)["error"]
        assert seconds < 10.0  # a bound, not a benchmark (the suite shares the cores)
    # With Content-Length the answer comes before the client has sent the body.
    assert all(r[2] < BIG for r in results["length"])
    assert len(loaded) > 100
    # The bar is 50 ms; on a machine so loaded that small requests alone already have a
    # p99 above 25 ms, it is twice that p99 (measured in the same run). A body read or
    # parsed on the event loop stalls for seconds (5.3 s for 157 MB before this limit).
    assert pct(loaded, 99) < max(50, 2 * pct(alone, 99)), figures
    assert max(loaded) < 1.0, figures


def test_a_large_valid_body_is_parsed_off_the_event_loop(mnist_server, small):
    """A 10 MB batch takes about a second to parse; small requests must not wait for it.

    Parsed on the event loop, the body would hold one sequential small request for the
    whole parse, so the slowest small request is compared with the big request's time.
    """
    srv = mnist_server
    batch = np.round(np.random.default_rng(0).uniform(0, 255, (2000, 28, 28)), 1)
    valid_big = orjson.dumps({"instances": batch.tolist()})
    assert 8 * MB < len(valid_big) < 32 * MB
    loaded, results = _under_load(srv, small, {
        "valid": lambda: send_raw(srv.port, 0, payload=valid_big)}, seconds=4)
    big_seconds = [r[1] for r in results["valid"]]
    figures = {"loaded_p50_ms": pct(loaded, 50), "loaded_p99_ms": pct(loaded, 99),
               "loaded_max_ms": 1000 * max(loaded), "big_request_ms": pct(big_seconds, 50)}
    print("\n10 MB valid bodies:", json.dumps(figures))
    assert all(r[0] == 200 for r in results["valid"]), results["valid"][0][3][:300]
    assert len(orjson.loads(results["valid"][0][3])["predictions"]) == 2000
    assert max(loaded) < 0.5 * min(big_seconds), figures


def _pids_of(pattern: str) -> set[int]:
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def _descendants(pid: int) -> set[int]:
    """Processes under ``pid`` (a server started by another test's worker is not ours)."""
    import psutil

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def test_parser_processes_die_with_a_killed_server(reg_settings, served_registry, tmp_path):
    """kill -9 of ``mlp serve`` leaves no fork server or parser worker behind."""
    pattern = f"forkserver import main.*{REPO}"
    with ServerProcess(reg_settings, "--model", "mnist", log=tmp_path / "serve.log") as srv:
        deadline = time.time() + 30
        while not (_pids_of(pattern) & _descendants(srv.proc.pid)) and time.time() < deadline:
            time.sleep(0.2)
        helpers = _pids_of(pattern) & _descendants(srv.proc.pid)
        assert helpers, "the server started no parser processes"
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(timeout=30)
        deadline = time.time() + 15
        while _pids_of(pattern) & helpers and time.time() < deadline:
            time.sleep(0.2)
        assert not (_pids_of(pattern) & helpers), "parser processes outlived the server"
