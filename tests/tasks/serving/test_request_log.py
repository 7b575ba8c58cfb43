"""Request log files: the contract's line format, rotation, the size bound, crash recovery."""

import fcntl
import json
import re
import time
from dataclasses import dataclass

import numpy as np

from tasks.serving.request_log import (
    RequestLog,
    RotatingJsonl,
    close_stale,
    record_line,
)
from tasks.serving.runtime_options import RuntimeOptions
from tasks.serving.signature import Signature

NAME = re.compile(r"requests-\d{8}T\d{12}Z\.jsonl")


@dataclass
class Served:
    name: str
    version: str
    signature: Signature


def test_a_line_holds_the_contract_fields_columnar_by_input_name():
    served = Served("mnist", "3", Signature("pixels", (2,), "float32", "probabilities",
                                            (2,), "float32"))
    batch = np.array([[0.0, 255.0], [1.5, 2.0]], dtype=np.float32)
    line = record_line(served, batch, np.array([[0.1, 0.9], [0.6, 0.4]], np.float32), 200,
                       1.94321, 1796583600.1234)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = json.loads(line)
    assert list(doc) == ["ts", "model", "version", "status", "latency_ms", "n", "inputs",
                         "outputs"]
    assert doc["ts"] == "2026-12-06T19:00:00.123Z"
    assert (doc["model"], doc["version"], doc["status"], doc["latency_ms"], doc["n"]) == (
        "mnist", "3", 200, 1.943, 2)
    assert doc["inputs"] == {"pixels": [[0.0, 255.0], [1.5, 2.0]]}
    np.testing.assert_allclose(doc["outputs"]["probabilities"], [[0.1, 0.9], [0.6, 0.4]],
                               rtol=1e-6)


def test_bytes_are_text_when_utf8_else_base64_and_named_outputs_stay_named():
    served = Served("lm", "1", Signature("text", (), "string", "next", (2,), "string"))
    batch = np.array(["the market", b"caf\xc3\xa9", b"\xff\xd8\xff"], dtype=object)
    out = {"next": [["a", "b"]] * 3, "perplexity": np.array([1.5, 2.0, np.nan], np.float32)}
    doc = json.loads(record_line(served, batch, out, 200, 1.0, 0.0))
    assert doc["inputs"]["text"] == ["the market", "café", {"b64": "/9j/"}]
    assert doc["outputs"]["next"] == [["a", "b"]] * 3
    assert doc["outputs"]["perplexity"] == [1.5, 2.0, None]


def test_files_rotate_by_size_and_age_and_the_total_stays_bounded(tmp_path):
    f = RotatingJsonl(tmp_path, file_bytes=100, file_seconds=3600, max_bytes=250)
    for i in range(12):
        f.write(b'{"i": %d, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxx"}\n' % i)  # 40 bytes
    opened = list(tmp_path.glob("*.jsonl.open"))
    assert len(opened) == 1  # the file being written
    closed = sorted(tmp_path.glob("*.jsonl"))
    assert all(NAME.fullmatch(p.name) for p in closed)
    assert all(p.stat().st_size <= 100 for p in closed)
    assert sum(p.stat().st_size for p in closed) <= 250  # the oldest were deleted
    lines = [json.loads(x)["i"] for p in closed for x in p.read_text().splitlines()]
    assert lines == sorted(lines) and lines[-1] == 9 and lines[0] > 0
    assert not f.due()
    f.file_seconds = 0.01
    time.sleep(0.02)
    assert f.due()
    assert f.rotate().name.endswith(".jsonl")
    assert not list(tmp_path.glob("*.open"))


def test_a_file_left_open_by_a_killed_server_is_cut_to_whole_lines_and_closed(tmp_path):
    stale = tmp_path / "requests-20261206T190000000000Z.jsonl.open"
    stale.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "trunc')
    live = tmp_path / "requests-20261206T190500000000Z.jsonl.open"
    live.write_bytes(b'{"b": 1}\n')
    with open(live, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another server writes it
        closed = close_stale(tmp_path)
    assert [p.name for p in closed] == ["requests-20261206T190000000000Z.jsonl"]
    assert closed[0].read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert live.exists()  # left alone


def test_the_writer_samples_off_the_request_path_and_closes_files_on_stop(tmp_path):
    served = Served("m", "1", Signature("x", (1,), "float32", "y", (1,), "float32"))
    options = RuntimeOptions(log_sample={"m": 1.0, "other": 0.0})
    log = RequestLog(tmp_path, options)
    assert log.sampled("m") and not log.sampled("other") and not log.sampled("unlisted")
    log.start()
    for i in range(5):
        log.offer(served, np.array([[float(i)]], np.float32), np.array([[1.0]], np.float32),
                  200, 0.5, time.time())
    log.stop()
    files = list((tmp_path / "m").iterdir())
    assert len(files) == 1 and files[0].suffix == ".jsonl"
    assert [json.loads(x)["inputs"]["x"] for x in files[0].read_text().splitlines()] == [
        [[float(i)]] for i in range(5)]


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    served = Served("m", "1", Signature("x", (1,), "float32", "y", (1,), "float32"))
    log = RequestLog(tmp_path, RuntimeOptions(log_sample={"*": 1.0}, log_queue=2))
    batch = np.zeros((1, 1), np.float32)
    for _ in range(5):  # the writer is not started: nothing drains the queue
        log.offer(served, batch, batch, 200, 0.1, 0.0)
    assert log.dropped == 3


def test_the_handoff_queue_is_bounded_in_bytes_too():
    from tasks.serving.handoff import Handoff, nbytes

    big = np.zeros((4096, 28, 28), np.float32)  # 12.8 MB
    q = Handoff(max_items=100, max_bytes=20_000_000)
    assert q.offer("first", nbytes(big))  # one item always fits
    assert not q.offer("second", nbytes(big))  # would pass 20 MB
    assert q.offer("small", 1000)
    assert q.take() == "first" and q.bytes == 1000 and q.items == 1
    assert q.offer("second", nbytes(big))
    assert nbytes({"a": np.zeros(10, np.float64), "b": [b"xy", b"z"]}) >= 80
