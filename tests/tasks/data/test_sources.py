import numpy as np
import pytest

from tasks.data.idx import IdxFormatError, write_idx
from tasks.data.sources import IdxImageSource, SourceError


def test_files_and_validate(mnist_dir):
    src = IdxImageSource()
    files = src.files(str(mnist_dir))
    assert set(files) == {"train.image", "train.label", "test.image", "test.label"}
    assert src.validate(files) == {"train": {"rows": 300}, "test": {"rows": 100}}


def test_raw_files_are_found_too(tmp_path):
    from tests.conftest import digits_as_mnist, write_mnist_dir

    d = write_mnist_dir(tmp_path / "raw", digits_as_mnist(20, 10), gz=False)
    assert IdxImageSource().validate(IdxImageSource().files(str(d)))["test"]["rows"] == 10


def test_missing_file_is_named(mnist_dir):
    (mnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SourceError, match="missing test label file t10k-labels-idx1-ubyte"):
        IdxImageSource().files(str(mnist_dir))


def test_missing_directory(tmp_path):
    with pytest.raises(SourceError, match="source directory does not exist"):
        IdxImageSource().files(str(tmp_path / "nope"))


def test_label_image_count_mismatch_names_both_files(mnist_dir):
    write_idx(mnist_dir / "train-labels-idx1-ubyte.gz", np.zeros(299, np.uint8))
    src = IdxImageSource()
    with pytest.raises(SourceError,
                       match=r"train-labels-idx1-ubyte.gz: label count 299 does not match "
                             r"image count 300 of .*train-images-idx3-ubyte.gz"):
        src.validate(src.files(str(mnist_dir)))


def test_wrong_image_dims(mnist_dir):
    write_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", np.zeros((100, 8, 8), np.uint8))
    src = IdxImageSource()
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte.gz: image dims \[8, 8\]"):
        src.validate(src.files(str(mnist_dir)))


def test_labels_swapped_with_images(mnist_dir):
    # A labels file where images belong: wrong magic (idx1 instead of idx3).
    (mnist_dir / "train-images-idx3-ubyte.gz").write_bytes(
        (mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes())
    src = IdxImageSource()
    with pytest.raises(IdxFormatError, match="bad magic number 0x00000801: it declares 1 "
                                             "dimensions, this file must have 3"):
        src.validate(src.files(str(mnist_dir)))


def test_out_of_range_labels_leave_the_batch_as_bad_records(mnist_dir):
    labels = np.zeros(300, np.uint8)
    labels[[3, 250]] = [10, 255]
    write_idx(mnist_dir / "train-labels-idx1-ubyte.gz", labels)
    src = IdxImageSource()
    batches = list(src.read_batches(src.files(str(mnist_dir)), "train", 128))
    assert sum(len(b["row"]) for b in batches) == 298
    bad = [r for b in batches for r in b["_bad"]]
    assert [(r["row"], r["field"], r["value"]) for r in bad] == [(3, "label", 10),
                                                                (250, "label", 255)]
    assert bad[0]["file"].endswith("train-labels-idx1-ubyte.gz")
    assert 3 not in batches[0]["row"]


def test_a_header_only_csv_is_refused_naming_the_file(tmp_path):
    from tasks.data.sources import Column, SourceError, TabularSource

    source = TabularSource(columns=(Column("x"), Column("y")), layout={"all": "t.csv"},
                           default_location=str(tmp_path))
    (tmp_path / "t.csv").write_text("x,y\n")
    with pytest.raises(SourceError, match=r"t\.csv: has a header but no data rows"):
        source.validate(source.files(str(tmp_path)))


def test_a_csv_bigger_than_the_parse_cache_is_streamed_not_kept(tmp_path, monkeypatch):
    from tasks.data import sources
    from tasks.data.sources import Column, TabularSource

    source = TabularSource(columns=(Column("x"), Column("y")), layout={"all": "t.csv"},
                           default_location=str(tmp_path))
    (tmp_path / "t.csv").write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(50)))
    files = source.files(str(tmp_path))
    sources.clear_cache()
    kept = [b["x"].tolist() for b in source.read_batches(files, "all", 16)]
    assert len(sources._CACHE) == 1  # a small file's parse is kept for the next branch
    sources.clear_cache()
    monkeypatch.setattr(sources, "CACHE_LIMIT", 100)  # bytes: the file is bigger
    streamed = [b["x"].tolist() for b in source.read_batches(files, "all", 16)]
    assert streamed == kept and [len(b) for b in kept] == [16, 16, 16, 2]
    assert not sources._CACHE


def _read_all(source, files, chunks):
    rows, xs, bad = [], [], []
    for c in chunks:
        for b in source.read_batches(files, "all", 7, chunk=c):
            rows += b["row"].tolist()
            xs += b["x"].tolist()
            bad += [(r["line"], r["row"], r["field"], r["reason"]) for r in b["_bad"]]
    return rows, xs, sorted(bad)


@pytest.mark.parametrize("has_header,skip_rows", [(True, 0), (False, 0), (True, 2)])
def test_a_big_csv_is_read_in_chunks_with_the_files_own_rows_and_lines(
        tmp_path, monkeypatch, has_header, skip_rows):
    from tasks.data import sources
    from tasks.data.sources import Column, TabularSource

    source = TabularSource(columns=(Column("x"), Column("y")), layout={"all": "t.csv"},
                           default_location=str(tmp_path), has_header=has_header,
                           skip_rows=skip_rows)
    lines = ["# made by a tool", '# "100" rows'][:skip_rows] + (['"x","y"'] if has_header
                                                               else [])
    for i in range(100):
        lines.append({13: "1,2,3", 41: "oops,1", 77: "5"}.get(i, f"{i},{2 * i}"))
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    files = source.files(str(tmp_path))
    sources.clear_cache()
    whole = _read_all(source, files, source.chunks(files, "all"))
    assert source.chunks(files, "all") == [None]
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64)
    chunks = source.chunks(files, "all")
    assert len(chunks) > 5 and chunks[0].start == 0 and chunks[-1].end == len(
        (tmp_path / "t.csv").read_bytes())
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    sources.clear_cache()
    assert _read_all(source, files, chunks) == whole
    rows, xs, bad = whole
    first = skip_rows + has_header + 1  # file line of data row 0
    assert rows == [i for i in range(100) if i not in (13, 41, 77)] == xs
    assert [(line - first, row) for line, row, *_ in bad] == [(13, 13), (41, 41), (77, 77)]
    assert [f for *_, f, _ in bad] == [None, "x", None]


def test_a_csv_with_quotes_is_not_cut(tmp_path, monkeypatch):
    from tasks.data import sources
    from tasks.data.sources import Column, TabularSource

    source = TabularSource(columns=(Column("x"), Column("y", dtype="string")),
                           layout={"all": "t.csv"}, default_location=str(tmp_path))
    body = "".join(f'{i},"line {i}\nand more"\n' for i in range(100))
    (tmp_path / "t.csv").write_text("x,y\n" + body)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 64)
    files = source.files(str(tmp_path))
    (chunk,) = source.chunks(files, "all")
    assert (chunk.start, chunk.first_line) == (0, 1)
    assert _read_all(source, files, [chunk])[1] == list(range(100))
