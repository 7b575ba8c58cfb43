"""The request-log reader: closed files only, failed and malformed lines counted."""

import json

from tasks.data.requestlog import ReadStats, closed_files, read_requests, write_requests


def test_only_closed_files_newer_than_the_watermark_are_read(tmp_path):
    for stamp in ("20260101T000000000000Z", "20260102T000000000000Z"):
        write_requests(tmp_path / f"requests-{stamp}.jsonl", [])
    (tmp_path / "requests-20260103T000000000000Z.jsonl.open").write_text("{}\n")
    (tmp_path / "other.jsonl").write_text("{}\n")
    names = [p.name for p in closed_files(tmp_path)]
    assert names == ["requests-20260101T000000000000Z.jsonl",
                     "requests-20260102T000000000000Z.jsonl"]
    assert [p.name for p in closed_files(tmp_path, after=names[0])] == names[1:]
    assert closed_files(tmp_path / "missing") == []


def test_requests_are_read_columnar_and_bad_lines_are_counted(tmp_path):
    path = write_requests(tmp_path / "requests-20260101T000000000000Z.jsonl", [
        {"ts": "2026-01-01T00:00:01Z", "model": "m", "version": "2", "status": 200, "n": 2,
         "inputs": {"x": [[1, 2], [3, 4]]}, "outputs": {"y": [0.5, 0.7]},
         "something_new": {"ignored": True}},
        {"ts": "2026-01-01T00:00:02Z", "version": "2", "status": 400, "inputs": {}},
    ])
    with open(path, "a") as fh:
        fh.write("{truncated\n")
        fh.write(json.dumps({"ts": "2026-01-01T00:00:03Z", "version": "2", "status": 200,
                             "inputs": {"x": [[5, 6]]}, "outputs": {"y": [0.1]}}) + "\n")
    stats = ReadStats()
    batches = list(read_requests([path], stats))
    assert [len(b) for b in batches] == [2, 1] and batches[0].inputs["x"].shape == (2, 2)
    assert stats.requests == 2 and stats.instances == 3 and stats.failed == 1
    assert stats.malformed[0]["line"] == 3 and stats.malformed[0]["file"] == str(path)
    assert (stats.first_ts, stats.last_ts) == ("2026-01-01T00:00:01Z", "2026-01-01T00:00:03Z")
