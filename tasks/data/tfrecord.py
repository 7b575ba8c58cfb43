"""The TFRecord contract of a preprocessed dataset: its feature spec, writer and reader.

Preprocessing writes ``tf.train.Example`` records whose features the feature spec
(``feature_spec.json``) describes, one entry per name:

- ``encoding: raw``: the array's bytes, little-endian ``dtype``, reshaped to ``shape``
  (images as uint8; the packed float32 ``features`` vector of tabular use cases);
- ``encoding: int64`` / ``float``: scalars (labels);
- ``encoding: tf_object_detection``: an annotated image as a whole record in the
  TensorFlow Object Detection API's layout (:mod:`tasks.data.detection`); such a dataset
  holds nothing else, and the detection objective reads it.

A feature may be written to some splits only (``"splits": [...]``, default all). Tabular
use cases keep, in the test split, each raw input column as a client sends it
(``raw_inputs.<column>``: ``float`` for numbers, ``int64`` for integers, ``bytes`` for
text, in the order of the packed features), beside the transformed ``features``:
evaluation scores the exported model on them, and example requests are built from them
(:meth:`DatasetReader.raw_columns`). Datasets of other packed sources (features computed
from media) keep one float32 vector :data:`RAW_INPUTS` instead. A text label is written
as its class index; the classes, in order, are the label's ``classes``.

Shards are ``<split>/part-SSSSS-of-NNNNN.tfrecord``. :func:`make_dataset` reads them back
as batched ``(inputs, labels)``, :meth:`DatasetReader.raw_rows` the raw test inputs; this
module is the only place that knows the encoding.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.errors import PermanentError
from tasks.core.files import read_json
from tasks.core.run import DATASET_MANIFEST, FEATURE_SPEC, STATS
from tasks.data.detection import ENCODING as OD_ENCODING
from tasks.data.detection import encode as encode_detection
from tasks.data.detection import feature_spec as detection_spec
from tasks.features.transforms import output_width
from tasks.spec import PreprocessSpec

PACKED = "features"  # the packed float32 vector of all non-raw features
RAW_INPUTS = "raw_inputs"  # the same rows' raw values, as the served model takes them
RAW_COLUMN = "raw_inputs."  # prefix of one raw column of a tabular source
RAW_SPLITS = ("test",)  # splits that keep RAW_INPUTS (what is scored as served)
TABULAR_DTYPES = {"float64": ("float32", "float"), "int64": ("int64", "int64"),
                  "string": ("string", "bytes")}  # source dtype -> (served dtype, encoding)


class DatasetContractError(PermanentError, ValueError):
    """The dataset does not hold what the caller needs; the message says what to do."""


def tabular_inputs(prep: PreprocessSpec, schema: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the packed features are a tabular source's typed scalar columns.

    Then the served model takes one named input per column (numbers, integers, text).
    """
    return bool(prep.packed) and all(
        schema.get(f.name, {}).get("dtype") in TABULAR_DTYPES
        and not schema.get(f.name, {}).get("shape") for f in prep.packed)


def label_classes(prep: PreprocessSpec, schema: Mapping[str, Mapping[str, Any]],
                  stats: Mapping[str, Any]) -> list[str] | None:
    """The classes of a text label, in index order; None for other labels.

    The spec's allowed values when it fixes them (``Column.values``), else the classes
    seen in all splits, sorted (from the full-pass class counts of each split).
    """
    label = schema.get(prep.label or "", {})
    if label.get("dtype") != "string":
        return None
    if label.get("values") is not None:
        return [str(v) for v in label["values"]]
    return sorted({c for st in stats.values() for c in st.get("class_counts", {})})


def encode_labels(values: np.ndarray, classes: list[str]) -> np.ndarray:
    """Text labels -> class indices (int64).

    Raises:
        ValueError: A label outside ``classes`` (the source's row check keeps them out).

    """
    index = {c: i for i, c in enumerate(classes)}
    try:
        return np.fromiter((index[str(v)] for v in values.tolist()), np.int64, len(values))
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not one of the classes {classes}") from None


def output_spec(prep: PreprocessSpec, schema: Mapping[str, Mapping[str, Any]],
                stats: Mapping[str, Any], classes: list[str] | None = None
                ) -> dict[str, dict[str, Any]]:
    """The TFRecord feature spec.

    Raw uint8 images, token-id windows, packed float32 features, the raw test columns,
    the label (``classes``: a text label's classes in index order).
    """
    spec: dict[str, dict[str, Any]] = {}
    packed = prep.packed
    for f in prep.detection:  # Object Detection API records (tasks.data.detection)
        spec[f.name] = detection_spec(schema[f.name].get("class_names", ()))
    for f in prep.raw:
        spec[f.name] = {"dtype": "uint8", "shape": list(schema[f.name]["shape"]),
                        "encoding": "raw"}
    for f in prep.text:  # token-id windows: input + the target shifted by one
        spec[f.name] = {"dtype": "int32", "shape": [f.sequence_length + 1], "encoding": "raw",
                        "tokenizer": f.tokenizer,
                        "vocab_size": stats.get("features", {}).get(f.name, {})
                        .get("vocab_size")}
    if packed:
        spec[PACKED] = {
            "dtype": "float32", "shape": [output_width(packed, stats)], "encoding": "raw",
            "columns": [{"name": f.name, "transform": f.transform, "log1p": f.log1p}
                        for f in packed],
        }
    if tabular_inputs(prep, schema):
        for f in dict.fromkeys(f.name for f in packed):
            dtype, encoding = TABULAR_DTYPES[schema[f]["dtype"]]
            spec[RAW_COLUMN + f] = {"dtype": dtype, "shape": [], "encoding": encoding,
                                    "splits": list(RAW_SPLITS), "column": f}
    elif packed and all(schema.get(f.name, {}).get("dtype") != "string" for f in packed):
        spec[RAW_INPUTS] = {"dtype": "float32", "shape": [len(packed)], "encoding": "raw",
                            "splits": list(RAW_SPLITS),
                            "columns": [f.name for f in packed]}
    if prep.label:
        spec[prep.label] = {"dtype": prep.label_dtype, "shape": [],
                            "encoding": "int64" if prep.label_dtype == "int64" else "float"}
        if "num_classes" in schema.get(prep.label, {}):
            spec[prep.label]["num_classes"] = schema[prep.label]["num_classes"]
        if classes is not None:
            spec[prep.label]["classes"] = list(classes)
            spec[prep.label]["num_classes"] = len(classes)
    return spec


def for_split(spec: Mapping[str, Mapping[str, Any]], split: str
              ) -> dict[str, Mapping[str, Any]]:
    """The features of ``spec`` that records of ``split`` hold."""
    return {k: v for k, v in spec.items() if split in v.get("splits", (split,))}


def pack_raw(prep: PreprocessSpec, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """The raw values of the packed features as one ``(n, k)`` float32 matrix.

    This is the served model's input for tabular use cases (its first layer applies the
    transforms), in :attr:`PreprocessSpec.packed` order.
    """
    return np.stack([np.asarray(cols[f.name], np.float32) for f in prep.packed], axis=1)


def as_encoded(spec: Mapping[str, Mapping[str, Any]], cols: Mapping[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
    """The columns of ``spec`` in the dtypes :func:`encode_examples` writes them in.

    Encoding them afterwards gives the same bytes; held or moved before encoding, they
    take less room (a float64 column written as a float feature is float32 in a record).
    """
    out = {}
    for name, fs in spec.items():
        arr = cols[name]
        if fs["encoding"] == "raw":
            arr = np.asarray(arr, np.dtype(fs["dtype"]).newbyteorder("<"))
        elif fs["encoding"] == "int64":
            arr = np.asarray(arr, np.int64)
        elif fs["encoding"] == "float":
            arr = np.asarray(arr, np.float32)
        out[name] = arr
    return out


def encode_examples(spec: Mapping[str, Mapping[str, Any]],
                    cols: Mapping[str, np.ndarray]) -> list[bytes]:
    """Serialise rows as ``tf.train.Example`` bytes (raw bytes for arrays, as the spec says).

    One proto is reused and only its values are replaced per row, which is several times
    faster than building a fresh Example per row.
    """
    from tensorflow.core.example import example_pb2

    detection = [name for name, fs in spec.items() if fs["encoding"] == OD_ENCODING]
    if detection:  # one record per annotated image, in the Object Detection API's layout
        if len(spec) != 1:
            raise ValueError(f"a detection record holds one annotated image and nothing "
                             f"else; the spec also has {sorted(set(spec) - set(detection))}")
        return encode_detection(cols[detection[0]])
    n = len(next(iter(cols.values())))
    ex = example_pb2.Example()
    feats = ex.features.feature
    raw, ints, floats = [], [], []
    for name, fs in spec.items():
        if fs["encoding"] == "bytes":  # text values, UTF-8
            feats[name].bytes_list.value.append(b"")
            blobs = [str(v).encode() for v in cols[name].tolist()]
            raw.append((feats[name].bytes_list.value, blobs, None))
            continue
        arr = np.ascontiguousarray(cols[name])
        if fs["encoding"] == "raw":
            arr = arr.astype(np.dtype(fs["dtype"]).newbyteorder("<"), copy=False)
            width = arr[0].nbytes if n else 0
            feats[name].bytes_list.value.append(b"")
            raw.append((feats[name].bytes_list.value, arr.tobytes(), width))
        elif fs["encoding"] == "int64":
            feats[name].int64_list.value.append(0)
            ints.append((feats[name].int64_list.value, arr.astype(np.int64).tolist()))
        else:
            feats[name].float_list.value.append(0.0)
            floats.append((feats[name].float_list.value, arr.astype(np.float32).tolist()))
    out = []
    for i in range(n):
        for target, blob, width in raw:
            target[0] = blob[i] if width is None else blob[i * width:(i + 1) * width]
        for target, values in ints:
            target[0] = values[i]
        for target, values in floats:
            target[0] = values[i]
        # deterministic=True sorts the feature map: identical bytes across runs.
        out.append(ex.SerializeToString(deterministic=True))
    return out


def shard_name(split: str, shard: int, n_shards: int) -> str:
    """Relative path of one TFRecord shard."""
    return f"{split}/part-{shard:05d}-of-{n_shards:05d}.tfrecord"


def split_files(dataset_dir: Path, split: str) -> list[str]:
    """Sorted shard paths of one split."""
    return sorted(glob.glob(str(Path(dataset_dir) / split / "*.tfrecord")))


def split_digest(dataset_dir: Path, split: str) -> str:
    """SHA-256 of one split's records, shard by shard: equal digests, equal rows."""
    h = hashlib.sha256()
    for path in split_files(dataset_dir, split):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def make_dataset(
    dataset_dir: Path,
    split: str,
    feature_spec: Mapping[str, Mapping[str, Any]],
    input_key: str,
    label_key: str | None,
    batch_size: int,
    shuffle_seed: int | None = None,
    target: Any = None,
    stats: Mapping[str, Any] | None = None,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(inputs, targets)`` for one split.

    Records are parsed in large batches (vectorised ``parse_example``), decoded from raw
    bytes, cached in memory, then reshuffled per epoch when ``shuffle_seed`` is given.
    ``target(x, y, stats)`` replaces the label as the training target when given.
    """
    import tensorflow as tf

    files = split_files(dataset_dir, split)
    if not files:
        raise FileNotFoundError(f"{dataset_dir}/{split}: no TFRecord shards")
    keys = [k for k in (input_key, label_key) if k]
    desc = {}
    for name in keys:
        fs = feature_spec[name]
        if fs["encoding"] == "raw":
            desc[name] = tf.io.FixedLenFeature([], tf.string)
        elif fs["encoding"] == "int64":
            desc[name] = tf.io.FixedLenFeature(fs["shape"], tf.int64)
        else:
            desc[name] = tf.io.FixedLenFeature(fs["shape"], tf.float32)

    def decode(records: Any) -> tuple[Any, Any]:
        ex = tf.io.parse_example(records, desc)
        x = ex[input_key]
        fs = feature_spec[input_key]
        if fs["encoding"] == "raw":
            x = tf.io.decode_raw(x, tf.dtypes.as_dtype(fs["dtype"]))
            x = tf.reshape(x, [-1, *fs["shape"]])
        y = ex[label_key] if label_key else tf.zeros(tf.shape(x)[:1], tf.int64)
        return tf.cast(x, tf.float32), y

    ds = tf.data.TFRecordDataset(files).batch(4096).map(decode)
    if target is not None:  # on whole batches, before the cache: computed once, not per row
        ds = ds.map(lambda x, y: (x, target(x, y, stats)))
    ds = ds.cache().unbatch()
    if shuffle_seed is not None:
        ds = ds.shuffle(20_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)



@dataclass(frozen=True)
class DatasetReader:
    """Read access to one preprocessed dataset: its feature spec, statistics and splits.

    Attributes:
        dataset_dir: The dataset folder (shards, ``feature_spec.json``, ``stats.json``).
        feature_spec: What the records hold (see the module docstring).
        stats: Full-pass statistics per split.
        manifest: Rows and class counts per split, shard files, counters.

    """

    dataset_dir: Path
    feature_spec: dict[str, Any]
    stats: dict[str, Any]
    manifest: dict[str, Any]

    @classmethod
    def open(cls, dataset_dir: str | Path) -> DatasetReader:
        """Open a dataset the preprocessing step published."""
        d = Path(dataset_dir)
        return cls(d, read_json(d / FEATURE_SPEC), read_json(d / STATS),
                   read_json(d / DATASET_MANIFEST))

    def served_key(self, input_key: str) -> str:
        """The feature holding the served model's input (raw values, not transformed).

        Raises:
            DatasetContractError: A tabular dataset written before raw inputs were kept.

        """
        if input_key != PACKED:
            return input_key  # images are stored raw: what is trained on is what is sent
        if self.raw_keys():
            return RAW_COLUMN + "*"  # named raw columns (raw_columns)
        if RAW_INPUTS not in self.feature_spec:
            raise DatasetContractError(
                f"{self.dataset_dir}: the dataset has no raw inputs ({RAW_INPUTS!r}); it "
                "was written by an older preprocessing step, run preprocessing again")
        return RAW_INPUTS

    def arrays(self, name: str, keys: list[str], limit: int | None = None
               ) -> dict[str, np.ndarray]:
        """Whole columns of one split, decoded, in file order (the first ``limit`` rows).

        Raises:
            DatasetContractError: A key the records of this split do not hold.

        """
        import tensorflow as tf

        files = split_files(self.dataset_dir, name)
        desc = {}
        for key in keys:
            fs = self.feature_spec.get(key)
            if fs is None or name not in fs.get("splits", (name,)):
                raise DatasetContractError(
                    f"{self.dataset_dir}: split {name!r} has no feature {key!r}")
            if fs["encoding"] in ("raw", "bytes"):
                desc[key] = tf.io.FixedLenFeature([], tf.string)
            elif fs["encoding"] == "int64":
                desc[key] = tf.io.FixedLenFeature(fs["shape"], tf.int64)
            else:
                desc[key] = tf.io.FixedLenFeature(fs["shape"], tf.float32)
        ds = tf.data.TFRecordDataset(files)
        if limit is not None:
            ds = ds.take(limit)
        out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for records in ds.batch(8192):
            ex = tf.io.parse_example(records, desc)
            for key in keys:
                fs = self.feature_spec[key]
                v = ex[key].numpy()
                if fs["encoding"] == "raw":
                    v = np.frombuffer(b"".join(v), np.dtype(fs["dtype"]).newbyteorder("<"))
                    v = v.reshape(-1, *fs["shape"]).astype(fs["dtype"])
                elif fs["encoding"] == "bytes":
                    v = np.array([b.decode() for b in v.tolist()], dtype=object)
                out[key].append(v)
        return {k: np.concatenate(v) if v else np.empty(
            (0, *self.feature_spec[k]["shape"]),
            dtype=object if self.feature_spec[k]["encoding"] == "bytes" else None)
            for k, v in out.items()}

    def raw_keys(self) -> dict[str, str]:
        """Column -> record key of the raw test columns of a tabular dataset (in order)."""
        order = [c["name"] for c in self.feature_spec.get(PACKED, {}).get("columns", [])]
        keys = {fs["column"]: key for key, fs in self.feature_spec.items()
                if key.startswith(RAW_COLUMN) and "column" in fs}
        return {c: keys[c] for c in dict.fromkeys(order) if c in keys}

    def raw_columns(self, name: str, limit: int | None = None) -> dict[str, np.ndarray]:
        """The raw input columns of one split, as a client sends them (tabular datasets).

        Column -> values (float32, int64, or text as an object array), in the order of
        the packed features; the first ``limit`` rows in file order.

        Raises:
            DatasetContractError: The dataset keeps no raw columns.

        """
        keys = self.raw_keys()
        if not keys:
            raise DatasetContractError(f"{self.dataset_dir}: the dataset keeps no raw input "
                                       "columns; run preprocessing again")
        cols = self.arrays(name, list(keys.values()), limit)
        return {col: cols[key] for col, key in keys.items()}

    def class_names(self, label_key: str | None) -> list[str]:
        """A text label's classes in index order (empty for other labels)."""
        fs = self.feature_spec.get(label_key or "", {})
        return [str(c) for c in fs.get("classes", [])]

    def raw_rows(self, name: str, input_key: str, label_key: str | None,
                 limit: int | None = None) -> tuple[Any, np.ndarray | None]:
        """Inputs of one split as a client sends them (raw units), and labels.

        Tabular rows come as named columns (:meth:`raw_columns`, kept for the test
        split) or, in datasets of packed media features, :data:`RAW_INPUTS`; images
        from the stored raw pixels; rows are in file order, the first ``limit`` of them.
        """
        if input_key == PACKED and self.raw_keys():
            labels = self.arrays(name, [label_key], limit)[label_key] if label_key else None
            return self.raw_columns(name, limit), labels
        key = self.served_key(input_key)
        cols = self.arrays(name, [key] + ([label_key] if label_key else []), limit)
        return cols[key].astype(np.float32), cols.get(label_key) if label_key else None

    def split(self, name: str, input_key: str, label_key: str | None, batch_size: int, *,
              target: Any = None, shuffle_seed: int | None = None) -> Any:
        """Batched ``(inputs, labels or targets)`` of one split (see :func:`make_dataset`)."""
        return make_dataset(self.dataset_dir, name, self.feature_spec, input_key, label_key,
                            batch_size, shuffle_seed=shuffle_seed, target=target,
                            stats=self.stats)
