"""Scoring inputs: the use case's raw format, label optional, same row checks, row keys."""

from dataclasses import replace

import numpy as np
import pytest

from models.creditcard_fraud import SPEC as FRAUD
from models.creditcard_fraud import generate
from models.mnist import SPEC as MNIST
from tasks.data.idx import IdxFormatError, write_idx
from tasks.data.scoring import LandingView, scoring_input
from tasks.data.sources import SourceError


def _csv(tmp_path, rows=50, label=True, bad_line=None):
    generate(tmp_path, rows, 3)
    path = tmp_path / "creditcard.csv"
    lines = path.read_text().splitlines()
    if not label:
        lines = [",".join(line.split(",")[:-1]) for line in lines]
    if bad_line:
        fields = lines[bad_line - 1].split(",")
        fields[3] = "oops"
        lines[bad_line - 1] = ",".join(fields)
    out = tmp_path / "new.csv"
    out.write_text("\n".join(lines) + "\n")
    path.unlink()
    return out


def _read_all(si):
    return [b for part in range(len(si.parts)) for b in si.read_batches(part, 16)]


def test_a_csv_without_its_label_is_read_with_line_keys_and_bad_rows_quarantined(tmp_path):
    path = _csv(tmp_path, label=False, bad_line=7)
    si = scoring_input(FRAUD.source, str(path), "Class")
    assert si.label is None and si.key_columns == ("_file", "_line")
    batches = _read_all(si)
    lines = np.concatenate([b["_line"] for b in batches])
    assert len(lines) == 49 and 7 not in lines and lines[0] == 2
    bad = [r for b in batches for r in b["_bad"]]
    assert [(r["file"], r["line"], r["field"], r["reason"]) for r in bad] == [
        (str(path), 7, "V3", "not a number")]
    assert "Class" not in batches[0]


def test_a_labelled_csv_keeps_its_label_and_a_folder_reads_every_file(tmp_path):
    (tmp_path / "a").mkdir()
    _csv(tmp_path / "a", rows=30)
    (tmp_path / "a" / "new.csv").rename(tmp_path / "a" / "one.csv")
    _csv(tmp_path / "a", rows=20)
    si = scoring_input(FRAUD.source, str(tmp_path / "a"), "Class")
    assert si.label == "Class" and len(si.parts) == 2
    assert sum(len(b["row"]) for b in _read_all(si)) == 50


def test_file_problems_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        scoring_input(FRAUD.source, str(tmp_path / "missing.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no CSV or Parquet files"):
        scoring_input(FRAUD.source, str(tmp_path / "empty"))
    odd = tmp_path / "odd.csv"
    odd.write_text("Time,V1,Extra\n1,2,3\n")
    with pytest.raises(SourceError, match=r"odd.csv: columns do not match the schema"):
        scoring_input(FRAUD.source, str(odd), "Class")


def test_idx_images_with_and_without_labels(tmp_path):
    images = np.arange(5 * 28 * 28, dtype=np.uint32).reshape(5, 28, 28).astype(np.uint8)
    write_idx(tmp_path / "new-images-idx3-ubyte.gz", images)
    si = scoring_input(MNIST.source, str(tmp_path))
    assert si.label is None and si.key_columns == ("_file", "_row")
    (batch,) = _read_all(si)
    assert batch["image"].shape == (5, 28, 28) and list(batch["_row"]) == [0, 1, 2, 3, 4]
    write_idx(tmp_path / "new-labels-idx1-ubyte.gz", np.array([1, 2, 3, 4, 99], np.uint8))
    si = scoring_input(MNIST.source, str(tmp_path))
    (batch,) = _read_all(si)
    assert si.label == "label" and list(batch["label"]) == [1, 2, 3, 4]
    assert batch["_bad"][0]["row"] == 4 and "label outside" in batch["_bad"][0]["reason"]
    write_idx(tmp_path / "small-images-idx3-ubyte", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(IdxFormatError, match="small-images-idx3-ubyte"):
        scoring_input(MNIST.source, str(tmp_path))


def test_media_files_flat_or_in_label_folders(tmp_path):
    from models.faces import SOURCE as FACES

    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "not-a-photo.jpg").write_bytes(b"nope")
    (flat / "notes.txt").write_text("ignored")
    si = scoring_input(FACES, str(flat))
    assert si.label is None and si.files() == [str(flat / "not-a-photo.jpg")]
    (batch,) = _read_all(si)
    assert len(batch["row"]) == 0 and "not an image" in batch["_bad"][0]["reason"]
    # Classes come from the data: scoring reads label folders against the version's
    # classes (tasks.steps.score.source_with_classes gives them to the source).
    assert scoring_input(FACES, str(flat)).label is None
    trained = replace(FACES, classes=("Ada_Lovelace", "Alan_Turing"))
    (tmp_path / "byname" / "Alan_Turing").mkdir(parents=True)
    (tmp_path / "byname" / "Alan_Turing" / "x.jpg").write_bytes(b"nope")
    assert scoring_input(trained, str(tmp_path / "byname")).label == "label"


def test_landing_view_checks_the_copies(tmp_path):
    from tasks.steps.ingest import ingest

    path = _csv(tmp_path, label=False)
    manifest = ingest(LandingView(FRAUD.source, "Class"), str(path), tmp_path / "landed")
    assert list(manifest["files"]) == ["new.csv"]
    si = scoring_input(FRAUD.source, str(tmp_path / "landed"), "Class")
    assert si.files() == [str(tmp_path / "landed" / "new.csv")]
