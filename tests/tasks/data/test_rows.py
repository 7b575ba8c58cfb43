"""Row checks before landing: ingest refuses what preprocessing would, naming file, row and
field; `mlp validate` finds dirty rows in seconds; file-level messages for empty files and
missing headers."""

import time

import numpy as np
import pytest

from tasks.data.idx import read_idx, write_idx
from tasks.data.rows import TooManyBadRows, bad_rows_message, scan_rows, tolerated_fraction
from tasks.data.sources import Column, IdxImageSource, SourceError, TabularSource
from tasks.steps.ingest import ingest


def test_ingest_refuses_a_label_preprocessing_would_refuse_and_lands_nothing(mnist_dir,
                                                                            tmp_path):
    """Issue 19.3: Fashion-MNIST files with one test label set to 200 (count unchanged)."""
    path = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    labels = read_idx(str(path), ndim=1).copy()
    labels[42] = 200
    write_idx(path, labels)
    dest = tmp_path / "raw" / "run"
    src = IdxImageSource()
    with pytest.raises(TooManyBadRows, match=(
            r"1 of 400 rows are bad \(max_bad_fraction 0\); first: "
            rf"{path} row 42 field 'label': label outside \[0, 10\) \(value 200\); "
            r"nothing was landed\. Fix the file, or quarantine the bad rows with "
            r"--param max_bad_fraction=0\.003")):
        ingest(src, str(mnist_dir), dest, max_bad_fraction=0.0)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no temp dir either
    # mlp validate (and so mlp run) says the same in seconds, from the labels alone.
    from tasks.spec import catalog
    from tasks.steps.validate import check_rows

    (problem, detail), _ = check_rows(catalog.get("mnist"), {"source_dir": str(mnist_dir)})
    assert f"{path} row 42 field 'label': label outside [0, 10) (value 200)" in str(problem)
    assert str(detail).endswith("field 'label': label outside [0, 10): 1 row (row 42 200)")
    # Tolerated, the same data lands (and preprocessing will quarantine that row).
    manifest = ingest(src, str(mnist_dir), dest, max_bad_fraction=0.01)
    assert manifest["facts"]["rows"] == 400 and manifest["facts"]["bad_rows"] == 1


def test_mlp_ingest_refuses_bad_rows_before_any_event(mnist_dir, capsys, monkeypatch):
    import socket

    from tasks.cli import main
    from tasks.core.config import settings

    with socket.socket() as s:  # no API server: an event would go to the metadata DB
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLP_AIRFLOW_URL", f"http://127.0.0.1:{s.getsockname()[1]}")
    path = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    labels = read_idx(str(path), ndim=1).copy()
    labels[7] = 200
    write_idx(path, labels)
    assert main(["ingest", "mnist", str(mnist_dir)]) == 1
    err = capsys.readouterr().err
    assert f"{path} row 7 field 'label': label outside [0, 10) (value 200)" in err, err
    landing = settings().root / "landing" / "mnist"
    assert not landing.exists() or list(landing.iterdir()) == []
    assert main(["ingest", "mnist", str(mnist_dir), "--param", "max_bad_fraction=2"]) == 2
    assert "not a fraction in [0, 1]" in capsys.readouterr().err
    assert main(["ingest", "mnist", str(mnist_dir), "--param", "epochs=2"]) == 2
    assert "mlp ingest takes only max_bad_fraction" in capsys.readouterr().err


def _shop_source(tmp_path, **kw):
    cols = (Column("minutes", min=0.0, header="time on site (min)"),
            Column("region", dtype="string"),
            Column("code", dtype="int64", values=(101, 205), header="store code"),
            Column("outcome", dtype="string", values=("browser", "buyer")))
    return TabularSource(columns=cols, layout={"all": "shop.csv"},
                         default_location=str(tmp_path), **kw)


def test_scan_reports_each_kind_of_dirty_row_with_line_and_field(tmp_path):
    (tmp_path / "shop.csv").write_text(
        "time on site (min),region,store code,outcome\n"
        "3.5,north,101,buyer\n"
        ",south,205,browser\n"          # line 3: empty cell
        "abc,east,101,buyer\n"          # line 4: not a number
        "-1,east,101,buyer\n"           # line 5: below the minimum
        "2.0,west,999,buyer\n"          # line 6: unknown code
        "2.0,west,101,maybe\n"          # line 7: unknown label
        "2.0,west\n"                    # line 8: too few fields
        "4.0,north,205,browser\n")
    src = _shop_source(tmp_path)
    scan = scan_rows(src, src.files(str(tmp_path)))
    assert (scan.rows, scan.bad) == (8, 6)
    report = scan.report()
    assert any("field 'time on site (min)': missing value: 1 row (line 3)" in r
               for r in report), report
    assert any("field 'time on site (min)': not a number: 1 row (line 4 'abc')" in r
               for r in report), report
    assert any("field 'store code': not one of [101, 205]: 1 row (line 6 '999')" in r
               for r in report), report
    assert any("row: expected 4 fields: 1 row (line 8" in r for r in report), report
    assert scan.first["line"] == 3
    assert scan.refusal(0.8) is None
    assert "6 of 8 rows are bad (max_bad_fraction 0.5)" in scan.refusal(0.5)


def test_a_big_file_is_sampled_and_says_so(tmp_path):
    src = _shop_source(tmp_path)
    lines = ["time on site (min),region,store code,outcome"]
    lines += [f"{i % 50}.5,north,101,buyer" for i in range(40_000)]
    lines[30] = "x,north,101,buyer"
    (tmp_path / "shop.csv").write_text("\n".join(lines) + "\n")
    files = src.files(str(tmp_path))
    started = time.perf_counter()
    scan = scan_rows(src, files, sample_bytes=100_000)
    assert time.perf_counter() - started < 10
    assert scan.rows < 40_000 and scan.bad == 1 and scan.first["line"] == 31
    assert "sampled the first 0 MiB of 1 MiB" in scan.notes[0]
    assert "the run checks every row" in scan.notes[0]
    assert scan_rows(src, files).rows == 40_000  # ingest reads everything


def test_a_file_without_header_or_with_a_count_line_keeps_the_file_s_line_numbers(tmp_path):
    """scikit-learn's CSV files start with a count line; some files have no header."""
    (tmp_path / "shop.csv").write_text("3,4,browser,buyer\n"
                                       "1.5,north,101,buyer\n"
                                       "x,north,101,buyer\n")
    src = _shop_source(tmp_path, has_header=False, skip_rows=1)
    files = src.files(str(tmp_path))
    assert src.validate(files)["all"]["columns"] == 4
    scan = scan_rows(src, files)
    assert (scan.rows, scan.bad, scan.first["line"]) == (2, 1, 3)
    batch = next(src.read_batches(files, "all", 100))
    assert batch["minutes"].tolist() == [1.5] and batch["row"].tolist() == [0]


def test_an_empty_file_says_it_is_empty(tmp_path):
    """Issue 19.5: a 0-byte CSV is named empty, not 'missing [all 31 columns]'."""
    from models.breast_cancer import SPEC

    (tmp_path / "breast_cancer.csv").write_bytes(b"")
    src = SPEC.source
    with pytest.raises(SourceError, match=r"breast_cancer\.csv: the file is empty \(0 bytes\); "
                                          r"expected a CSV file with the columns \['mean_"):
        src.validate(src.files(str(tmp_path)))
    (tmp_path / "breast_cancer.csv").write_text("\n\n")
    with pytest.raises(SourceError, match="holds no header row"):
        src.validate(src.files(str(tmp_path)))


def test_a_header_that_is_data_is_named_so(tmp_path):
    (tmp_path / "shop.csv").write_text("3.5,north,101,buyer\n4.0,south,205,browser\n")
    src = _shop_source(tmp_path)
    with pytest.raises(SourceError, match=r"its first line '3\.5,north,101,buyer' looks like "
                                          r"data, not a header.*has_header=False"):
        src.validate(src.files(str(tmp_path)))


def test_parquet_rows_are_checked_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"time on site (min)": [1.0, None, 3.0], "region": ["a", "b", "c"],
                      "store code": [101, 205, 7], "outcome": ["buyer"] * 3})
    pq.write_table(table, tmp_path / "shop.parquet")
    src = TabularSource(columns=_shop_source(tmp_path).columns,
                        layout={"all": "shop.parquet"}, default_location=str(tmp_path),
                        format="parquet")
    scan = scan_rows(src, src.files(str(tmp_path)), sample_bytes=1 << 20)
    assert (scan.rows, scan.bad) == (3, 2)
    assert [(e["examples"][0]["line"], f) for (f, _), e in scan.problems.items()] == [
        (3, "time on site (min)"), (4, "store code")]


def test_tolerated_fraction_is_a_round_value_just_above():
    assert tolerated_fraction(1, 178) == 0.006
    assert tolerated_fraction(1, 400) == 0.003
    assert tolerated_fraction(3, 10) == 0.3
    assert tolerated_fraction(0, 10) == 0.0
    assert bad_rows_message(1, 100, 0.01, {}) is None
    assert np.isclose(tolerated_fraction(7, 7), 1.0)
