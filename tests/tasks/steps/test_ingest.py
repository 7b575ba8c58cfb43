import json

import pytest

from tasks.core.files import sha256_file
from tasks.data.idx import IdxFormatError
from tasks.data.sources import IdxImageSource
from tasks.steps.ingest import ingest, snapshot_files


def test_snapshot_has_checksums_and_is_idempotent(mnist_dir, tmp_path):
    dest = tmp_path / "raw" / "run1"
    before = {p.name: p.read_bytes() for p in mnist_dir.iterdir()}
    m1 = ingest(IdxImageSource(), str(mnist_dir), dest)
    assert m1["facts"] == {"train": {"rows": 300}, "test": {"rows": 100}}
    for key, entry in m1["files"].items():
        assert sha256_file(dest / entry["file"]) == entry["sha256"]
        assert snapshot_files(dest)[key] == str(dest / entry["file"])
    m2 = ingest(IdxImageSource(), str(mnist_dir), dest)
    assert m2 == m1
    assert json.loads((dest / "manifest.json").read_text())["checksum"] == m1["checksum"]
    assert {p.name: p.read_bytes() for p in mnist_dir.iterdir()} == before  # source untouched


def test_tampered_snapshot_is_detected(mnist_dir, tmp_path):
    dest = tmp_path / "raw" / "run1"
    m = ingest(IdxImageSource(), str(mnist_dir), dest)
    (dest / m["files"]["train.label"]["file"]).write_bytes(b"x")
    with pytest.raises(RuntimeError, match="checksum changed"):
        ingest(IdxImageSource(), str(mnist_dir), dest)


def test_bad_input_leaves_no_snapshot(mnist_dir, tmp_path):
    (mnist_dir / "train-images-idx3-ubyte.gz").write_bytes(b"\x01\x02\x03\x04garbage")
    dest = tmp_path / "raw" / "run1"
    with pytest.raises(IdxFormatError, match="train-images-idx3-ubyte.gz"):
        ingest(IdxImageSource(), str(mnist_dir), dest)
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir()] == []  # no temp leftovers
