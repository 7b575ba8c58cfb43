"""Reader and writer for the IDX format used by MNIST and Fashion-MNIST.

The format: two zero bytes, a dtype code, the number of dimensions, then one big-endian
uint32 per dimension, then the data in C order. Files may be gzip-compressed.
Every error names the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from tasks.core.errors import PermanentError

# IDX dtype codes -> big-endian numpy dtypes.
_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


class IdxFormatError(PermanentError, ValueError):
    """An IDX file is malformed; the message names the file and the field."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise IdxFormatError(path, f"cannot read file ({exc})") from exc


def _check_dimensions(magic: bytes, code: int, declared: int, ndim: int | None,
                      path: str | Path) -> None:
    """A file declaring another number of dimensions is the wrong kind of file."""
    if ndim is not None and declared != ndim:
        want = f"0x0000{code:02x}{ndim:02x}"
        raise IdxFormatError(
            path, f"bad magic number 0x{magic.hex()}: it declares {declared} dimensions, "
                  f"this file must have {ndim} (magic {want}); is it the right file?")


def parse_idx(data: bytes, path: str | Path = "<bytes>", ndim: int | None = None
              ) -> np.ndarray:
    """Parse IDX bytes into a native-endian numpy array.

    Args:
        data: The whole (decompressed) file content.
        path: Name used in error messages.
        ndim: The number of dimensions the file must declare (3 for images, 1 for
            labels); a different one is reported as a wrong magic number, before the
            dimensions are read.

    Returns:
        The array with the shape recorded in the header.

    Raises:
        IdxFormatError: Wrong magic number, unknown dtype, truncated header or data, or
            trailing bytes after the data.

    """
    if len(data) < 4:
        raise IdxFormatError(path, f"file is {len(data)} bytes, too short for an IDX header")
    zero, code, declared = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise IdxFormatError(
            path, f"bad magic number 0x{data[:4].hex()}: first two bytes must be zero"
        )
    if code not in _DTYPES:
        raise IdxFormatError(
            path, f"bad magic number 0x{data[:4].hex()}: unknown dtype 0x{code:02x}"
        )
    if declared == 0:
        raise IdxFormatError(path, "magic number declares 0 dimensions")
    _check_dimensions(data[:4], code, declared, ndim, path)
    header_len = 4 + 4 * declared
    if len(data) < header_len:
        raise IdxFormatError(path, f"truncated header: {declared} dimensions need "
                                   f"{header_len} bytes")
    dims = struct.unpack(f">{declared}I", data[4:header_len])
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise IdxFormatError(
            path, f"truncated data: header dims {list(dims)} need {expected} bytes, found {actual}"
        )
    if actual > expected:
        raise IdxFormatError(
            path, f"{actual - expected} unexpected trailing bytes after dims {list(dims)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``); see :func:`parse_idx` for the checks."""
    path = Path(path)
    return parse_idx(_read_bytes(path), path, ndim)


def read_idx_header(path: str | Path, ndim: int | None = None
                    ) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and dimensions an IDX file declares, reading only its header (cheap).

    ``ndim`` is checked as :func:`parse_idx` checks it.

    Raises:
        IdxFormatError: Unreadable file, bad magic number or truncated header.

    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise IdxFormatError(path, f"file is {len(head)} bytes, too short for an "
                                           "IDX header")
            zero, code, declared = struct.unpack(">HBB", head)
            if zero != 0 or code not in _DTYPES or declared == 0:
                raise IdxFormatError(path, f"bad magic number 0x{head.hex()}: not an IDX file")
            _check_dimensions(head, code, declared, ndim, path)
            dims_raw = fh.read(4 * declared)
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxFormatError(path, f"cannot read file ({exc})") from exc
    if len(dims_raw) < 4 * declared:
        raise IdxFormatError(path, f"truncated header: {declared} dimensions need "
                                   f"{4 + 4 * declared} bytes")
    return _DTYPES[code].newbyteorder("="), struct.unpack(f">{declared}I", dims_raw)


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX (gzip-compressed when the name ends in ``.gz``).

    Args:
        path: Destination file.
        array: Array whose dtype is one IDX supports (uint8, int8, int16, int32, float32,
            float64).

    Returns:
        The written path.

    """
    path = Path(path)
    arr = np.ascontiguousarray(array)
    code = _CODES.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"{path}: dtype {arr.dtype} cannot be stored as IDX")
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(_DTYPES[code], copy=False).tobytes()
    if path.suffix == ".gz":
        # mtime=0 keeps the bytes (and checksums) identical across writes.
        path.write_bytes(gzip.compress(payload, mtime=0))
    else:
        path.write_bytes(payload)
    return path
