import gzip
import struct

import numpy as np
import pytest

from tasks.data.idx import IdxFormatError, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_roundtrip(tmp_path, suffix, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a.idx{suffix}", arr)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


def test_mnist_header_layout(tmp_path):
    path = write_idx(tmp_path / "imgs", np.zeros((5, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"  # MNIST's image magic 2051
    assert struct.unpack(">3I", raw[4:16]) == (5, 28, 28)


def test_wrong_magic_names_file(tmp_path):
    path = tmp_path / "bad-images"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 20)
    with pytest.raises(IdxFormatError, match=r"bad-images: bad magic number 0x12340803"):
        read_idx(path)


def test_unknown_dtype(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(IdxFormatError, match="unknown dtype 0x07"):
        read_idx(path)


def test_truncated_data_names_file_and_sizes(tmp_path):
    path = write_idx(tmp_path / "imgs", np.ones((3, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IdxFormatError, match=r"imgs: truncated data: header dims \[3, 28, 28\] "
                                             r"need 2352 bytes, found 2342"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "h"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(IdxFormatError, match="truncated header"):
        read_idx(path)


def test_too_short(tmp_path):
    path = tmp_path / "s"
    path.write_bytes(b"\x00")
    with pytest.raises(IdxFormatError, match="too short"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = write_idx(tmp_path / "l", np.ones(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(IdxFormatError, match="2 unexpected trailing bytes"):
        read_idx(path)


def test_corrupt_gzip_names_file(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6])
    with pytest.raises(IdxFormatError, match="labels.gz: cannot read file"):
        read_idx(path)


def test_parse_bytes_without_file():
    arr = parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x09")
    assert arr.tolist() == [7, 9]


def test_a_file_of_the_wrong_kind_is_reported_by_its_magic_number(tmp_path):
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(IdxFormatError, match=r"t10k-labels-idx1-ubyte: bad magic number "
                                             r"0x00000803: it declares 3 dimensions, this "
                                             r"file must have 1 \(magic 0x00000801\)"):
        read_idx(path, ndim=1)
