"""The served transform of tabular models: named, typed raw columns in, Beam's vector out.

(``PackedColumns`` cuts the packed vector back into its features, for models that embed
``vocab`` ids: :func:`tasks.features.transforms.embedded`.)

``TabularTransform`` is the Keras twin of :func:`tasks.features.transforms.apply_numpy`
for a tabular source: it takes a dict of one ``(n,)`` tensor per raw column (float32,
int64 or string, as a client sends them) and returns the packed float32 vector Beam
wrote for training, feature by feature:

- numeric: ``log1p`` (optional), then ``x * scale + offset`` clipped to ``[low, high]``;
- categorical (``vocab`` / ``onehot``): a Keras ``StringLookup`` (text) or
  ``IntegerLookup`` (integers) on Beam's training vocabulary, whose ids are moved so that
  the out-of-vocabulary bucket comes last (index ``len(vocab)``), as Beam's and
  tf.Transform's; ``vocab`` gives the id as a float, ``onehot`` a ``len(vocab) + 1``
  block. Float columns declared categorical compare values numerically.

Self-contained (Keras and numpy only): MLflow logs this file with every model
(``code_paths``), so the models load outside the platform too.
"""

from __future__ import annotations

from typing import Any

_LAYER: list[type] = []
_SLICES: list[type] = []


def packed_columns_layer() -> type:
    """The registered ``PackedColumns`` layer class: the packed vector cut into features."""
    if _SLICES:
        return _SLICES[0]
    import keras

    @keras.saving.register_keras_serializable(package="mlp")
    class PackedColumns(keras.layers.Layer):
        """``(n, width)`` -> one ``(n, stop - start)`` tensor per ``[start, stop]`` slice."""

        def __init__(self, slices: list[list[int]], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.slices = [list(map(int, sl)) for sl in slices]

        def call(self, x: Any) -> list[Any]:
            return [x[:, a:b] for a, b in self.slices]

        def compute_output_shape(self, input_shape: Any) -> Any:
            return [(input_shape[0], b - a) for a, b in self.slices]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "slices": self.slices}

    _SLICES.append(PackedColumns)
    return PackedColumns


def _oov_token(vocab: list[Any], kind: str) -> Any:
    """A token the lookup may use for unknown values: never one of the vocabulary."""
    if kind == "integer":
        return min(vocab, default=0) - 1
    token = "[UNK]"
    while token in vocab:
        token += "_"
    return token


def tabular_transform_layer() -> type:
    """The registered ``TabularTransform`` layer class (created on first use)."""
    if _LAYER:
        return _LAYER[0]
    import keras

    @keras.saving.register_keras_serializable(package="mlp")
    class TabularTransform(keras.layers.Layer):
        """Per-column transforms and vocabulary lookups with constants from training."""

        def __init__(self, columns: list[dict[str, Any]], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.columns = columns
            self.lookups: dict[str, Any] = {}
            for c in columns:
                if c["kind"] == "numeric" or c["lookup"] == "float" or c["input"] in \
                        self.lookups:
                    continue
                cls = (keras.layers.StringLookup if c["lookup"] == "string"
                       else keras.layers.IntegerLookup)
                self.lookups[c["input"]] = cls(
                    vocabulary=list(c["vocab"]), num_oov_indices=1,
                    oov_token=_oov_token(list(c["vocab"]), c["lookup"]),
                    name=f"lookup_{c['input']}")

        def build(self, input_shape: Any) -> None:
            self.built = True  # the lookups carry their vocabularies from __init__

        def ids(self, name: str, x: Any) -> Any:
            """Vocabulary ids of one column, out-of-vocabulary last (as Beam writes them)."""
            k = keras.ops
            c = next(c for c in self.columns if c["input"] == name and c["kind"] != "numeric")
            size = len(c["vocab"])
            if c["lookup"] == "float":
                vocab = k.convert_to_tensor([list(map(float, c["vocab"]))], "float32")
                hits = k.cast(k.equal(k.cast(x, "float32")[:, None], vocab), "int64")
                known = k.sum(hits, axis=1)
                idx = k.sum(hits * k.arange(size, dtype="int64")[None, :], axis=1)
                return k.where(known > 0, idx, size)
            raw = k.cast(self.lookups[name](x), "int64")  # 0 = unknown, i + 1 = vocab[i]
            return k.where(k.equal(raw, 0), size, raw - 1)

        def call(self, inputs: dict[str, Any]) -> Any:
            k = keras.ops
            out = []
            for c in self.columns:
                x = inputs[c["input"]]
                if c["kind"] == "numeric":
                    col = k.cast(x, "float32")[:, None]
                    if c["log1p"]:
                        col = k.log1p(k.maximum(col, -0.999999))
                    out.append(k.clip(col * c["scale"] + c["offset"], c["low"], c["high"]))
                    continue
                idx = self.ids(c["input"], x)
                if c["kind"] == "onehot":
                    out.append(k.one_hot(idx, len(c["vocab"]) + 1, dtype="float32"))
                else:
                    out.append(k.cast(idx, "float32")[:, None])
            return k.concatenate(out, axis=1) if len(out) > 1 else out[0]

        def compute_output_shape(self, input_shape: Any) -> Any:
            width = sum(len(c["vocab"]) + 1 if c["kind"] == "onehot" else 1
                        for c in self.columns)
            return (None, width)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "columns": self.columns}

    _LAYER.append(TabularTransform)
    return TabularTransform
