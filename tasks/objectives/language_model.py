"""Language models: next-token prediction over token-id windows, gated on perplexity.

Preprocessing (:mod:`tasks.steps.text_route`) writes windows of ``sequence_length + 1``
ids; here the input is ``window[:-1]`` and the target the same window shifted by one,
``window[1:]``. The loss is the mean token cross-entropy, so perplexity is ``exp(loss)``:
logged per epoch for training and validation (``perplexity``, ``val_perplexity``), and
measured on the validation and test splits after training (``valid_perplexity``,
``test_perplexity``, the gate metric, and next-token accuracy). A baseline is measured in
the same run on the same ids: an interpolated Kneser-Ney trigram model from NLTK
(:class:`KneserNeyBaseline`).

The served model takes text (:mod:`tasks.features.text_layers`): ``TextToIds`` (same
tokeniser and vocabulary as Beam), the trained network, then ``NextTokens``, which
answers per instance ``next`` (top tokens after the text), ``probabilities``,
``predicted`` (the input shifted by one) and ``perplexity``. Empty text, and (for a
vocabulary without ``<unk>``) unknown tokens, are rejected with a message (HTTP 400).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.tfrecord import DatasetReader
from tasks.features.text_layers import text_layers
from tasks.objectives.base import EvalOutput, Objective
from tasks.spec import ModelSpec

log = logging.getLogger(__name__)

TASK = "language_model"
TOP_K = 5


def feature_of(stats: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Training-split statistics of the text feature (vocabulary and tokeniser)."""
    return stats["train"]["features"][key]


# --------------------------------------------------------------------------- data
def windows_dataset(dataset_dir: Path, split: str, feature_spec: Mapping[str, Any], key: str,
                    batch_size: int, shuffle_seed: int | None = None) -> Any:
    """``(inputs, targets)`` batches of one split.

    The input is a window without its last id, the target the window without its first.
    """
    import tensorflow as tf

    from tasks.data.tfrecord import split_files

    files = split_files(dataset_dir, split)
    if not files:
        raise FileNotFoundError(f"{dataset_dir}/{split}: no TFRecord shards")
    width = int(feature_spec[key]["shape"][0])
    desc = {key: tf.io.FixedLenFeature([], tf.string)}

    def decode(records: Any) -> Any:
        raw = tf.io.parse_example(records, desc)[key]
        return tf.reshape(tf.io.decode_raw(raw, tf.int32), [-1, width])

    ds = tf.data.TFRecordDataset(files).batch(4096).map(decode).cache().unbatch()
    if shuffle_seed is not None:
        ds = ds.shuffle(50_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    return (ds.batch(batch_size)
            .map(lambda w: (w[:, :-1], w[:, 1:]))
            .prefetch(tf.data.AUTOTUNE))


def read_windows(dataset_dir: Path, split: str, feature_spec: Mapping[str, Any], key: str
                 ) -> np.ndarray:
    """All windows of a split, in file order, as an ``(n, sequence_length + 1)`` array."""
    import tensorflow as tf

    from tasks.data.tfrecord import split_files

    width = int(feature_spec[key]["shape"][0])
    out = []
    for rec in tf.data.TFRecordDataset(split_files(dataset_dir, split)).batch(8192):
        raw = tf.io.parse_example(rec, {key: tf.io.FixedLenFeature([], tf.string)})[key]
        out.append(tf.reshape(tf.io.decode_raw(raw, tf.int32), [-1, width]).numpy())
    return np.concatenate(out) if out else np.empty((0, width), np.int32)


def stream_of(windows: np.ndarray) -> np.ndarray:
    """The id stream windows were cut from (each window's last id starts the next)."""
    if not len(windows):
        return np.empty(0, np.int32)
    return np.concatenate([windows[:, :-1].ravel(), windows[-1, -1:]])


# --------------------------------------------------------------------------- training
def callbacks(params: Mapping[str, Any]) -> list[Any]:
    """Callbacks of a language model's training.

    They put ``perplexity``/``val_perplexity`` in each epoch's logs (before the logs are
    recorded) and decay the learning rate per epoch: ``learning_rate * lr_decay **
    epoch`` (the book's 0.002 x 0.97^epoch).
    """
    import keras

    lr0 = float(params.get("learning_rate", 1e-3))
    decay = float(params.get("lr_decay", 1.0))

    class PerplexityLogs(keras.callbacks.Callback):
        """``exp`` of the mean token cross-entropy, for training and validation."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if logs is None:
                return
            for src, dst in (("loss", "perplexity"), ("val_loss", "val_perplexity")):
                if src in logs:
                    logs[dst] = float(math.exp(min(float(logs[src]), 700.0)))

    return [PerplexityLogs(),
            keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr0 * decay ** epoch)]


def perplexity(model: Any, ds: Any) -> tuple[float, float, int]:
    """Perplexity and next-token accuracy over every target token of a dataset.

    Returns:
        ``(perplexity, accuracy, tokens)``.

    """
    total, right, count = 0.0, 0, 0
    for x, y in ds:
        probs = model.predict_on_batch(x)
        target = y.numpy().astype(np.int64)
        p = np.take_along_axis(probs, target[..., None], axis=-1)
        total += float(-np.log(np.clip(p, 1e-12, 1.0)).sum())
        right += int((probs.argmax(axis=-1) == target).sum())
        count += target.size
    return math.exp(total / max(count, 1)), right / max(count, 1), count


# --------------------------------------------------------------------------- baseline
class KneserNeyBaseline:
    """Interpolated Kneser-Ney n-gram model: NLTK's ``KneserNeyInterpolated``.

    NLTK computes a lower order's continuation counts by scanning every higher-order
    context on each call (``KneserNey._continuation_counts``), which costs about 0.1 s per
    token on a 200k-word corpus: hours for a test split. This class builds the same counts
    once, as indexes, and answers from them; the probabilities are NLTK's own, which a
    test checks against an unmodified ``KneserNeyInterpolated``.
    """

    def __init__(self, order: int = 3, discount: float = 0.75, unk: str = "<unk>") -> None:
        from nltk.lm import KneserNeyInterpolated
        from nltk.lm.smoothing import KneserNey

        class IndexedKneserNey(KneserNey):
            """NLTK's Kneser-Ney smoothing with precomputed continuation counts."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._index: dict[int, tuple[dict, dict]] = {}
                self._types: dict[tuple, int] = {}

            def _build(self, n: int) -> tuple[dict, dict]:
                # For each context c of length n - 2: how many distinct (x + c) prefixes
                # precede each word, and the sum of their distinct continuations.
                with_word: dict[tuple, dict[Any, int]] = {}
                totals: dict[tuple, int] = {}
                for prefix, counts in self.counts[n].items():
                    ctx = prefix[1:]
                    per = with_word.setdefault(ctx, {})
                    seen = 0
                    for w, c in counts.items():
                        if c > 0:
                            per[w] = per.get(w, 0) + 1
                            seen += 1
                    totals[ctx] = totals.get(ctx, 0) + seen
                return with_word, totals

            def _continuation_counts(self, word: Any, context: tuple = ()) -> tuple[int, int]:
                n = len(context) + 2
                if n not in self._index:
                    self._index[n] = self._build(n)
                with_word, totals = self._index[n]
                return with_word.get(context, {}).get(word, 0), totals.get(context, 0)

            def alpha_gamma(self, word: Any, context: tuple) -> tuple[float, float]:
                prefix_counts = self.counts[context]
                if len(context) + 1 == self._order:
                    word_count, total = prefix_counts[word], prefix_counts.N()
                else:
                    word_count, total = self._continuation_counts(word, context)
                if context not in self._types:
                    self._types[context] = sum(1 for c in prefix_counts.values() if c > 0)
                alpha = max(word_count - self.discount, 0.0) / total
                gamma = self.discount * self._types[context] / total
                return alpha, gamma

        self.order = order
        self.discount = discount
        self.unk = unk
        self.model = KneserNeyInterpolated(order, discount=discount)
        self.model.estimator = IndexedKneserNey(self.model.vocab, self.model.counts,
                                                order=order, discount=discount)

    def fit(self, stream: Sequence[str]) -> KneserNeyBaseline:
        """Count every n-gram (orders 1..order) of one token stream."""
        from nltk.util import everygrams

        self.model.fit([everygrams(list(stream), max_len=self.order)],
                       vocabulary_text=list(stream))
        return self

    def perplexity(self, stream: Sequence[str], start: int | None = None) -> float:
        """Perplexity of ``stream[start:]``, each token given its ``order - 1`` predecessors.

        ``start`` defaults to ``order - 1`` (the first tokens have no full context).
        """
        start = self.order - 1 if start is None else start
        # A vocabulary word the counts never saw (its lines fell in a window tail) is
        # scored as <unk>, as an n-gram model scores any out-of-vocabulary word.
        known = self.model.vocab
        stream = [w if w in known else self.unk for w in stream]
        total = 0.0
        for i in range(start, len(stream)):
            ctx = tuple(stream[max(0, i - self.order + 1):i])
            p = self.model.score(stream[i], ctx)
            total += -math.log(p) if p > 0 else math.inf
        return math.exp(total / max(len(stream) - start, 1))


# --------------------------------------------------------------------------- serving
def serving_example(reader: DatasetReader, key: str, split: str = "test", n: int = 2
                    ) -> np.ndarray:
    """Texts a client might send: the inputs of a split's first windows, as text.

    ``char_rnn``'s is the book's '반갑습니'; the MLflow input example and the run's
    ``request.json`` are built from it.
    """
    feat = feature_of(reader.stats, key)
    vocab = ([feat["unk"]] if feat["unk"] else []) + list(feat["vocab"])
    joiner = "" if feat["tokenizer"] == "chars" else " "
    first = read_windows(reader.dataset_dir, split, reader.feature_spec, key)[:n, :-1]
    texts = [joiner.join(vocab[i] for i in row) for row in first]
    return np.array(texts or [vocab[-1]], dtype=object)


def serving_model(trained: Any, stats: Mapping[str, Any], key: str, name: str) -> Any:
    """Text in, ``{"next", "probabilities", "predicted", "perplexity"}`` out."""
    import keras

    feat = feature_of(stats, key)
    classes = text_layers()
    text = keras.Input(shape=(), dtype="string", name="text")
    ids, lengths = classes["TextToIds"](
        vocabulary=feat["vocab"], tokenizer=feat["tokenizer"], unk=feat["unk"],
        start=feat["eos"], name="text_to_ids")(text)
    probs = trained(ids)
    out = classes["NextTokens"](
        vocabulary=feat["vocab"], unk=feat["unk"], start=feat["eos"],
        joiner="" if feat["tokenizer"] == "chars" else " ",
        top_k=min(TOP_K, feat["vocab_size"]), name="next_tokens")([ids, lengths, probs])
    return keras.Model(text, out, name=f"{name}_serving")



# --------------------------------------------------------------------------- objective
class LanguageModel(Objective):
    """Next-token prediction over token-id windows, measured by perplexity."""

    kind = TASK
    metrics = ("test_perplexity", "test_accuracy", "valid_perplexity",
               "baseline_kn_perplexity", "improvement_over_baseline")
    baseline_order = 3

    def dataset(self, reader: DatasetReader, model: ModelSpec, split: str, batch_size: int,
                shuffle_seed: int | None = None) -> Any:
        return windows_dataset(reader.dataset_dir, split, reader.feature_spec,
                               model.input_key, batch_size, shuffle_seed)

    def callbacks(self, params: Mapping[str, Any]) -> list[Any]:
        return callbacks(params)

    def serving_model(self, name: str, model: ModelSpec, trained: Any,
                      stats: Mapping[str, Any]) -> Any:
        return serving_model(trained, stats, model.input_key, name)

    def serving_example(self, model: ModelSpec, reader: DatasetReader) -> Any:
        return serving_example(reader, model.input_key)

    def scores_served_rows(self, model: ModelSpec) -> bool:
        """The served model takes text; the test split holds ids of this run's vocabulary."""
        return False

    def evaluate(self, trained: Any, reader: DatasetReader, model: ModelSpec,
                 calibration: Mapping[str, Any], out_dir: Path | None) -> EvalOutput:
        """Perplexities and next-token accuracy, and the Kneser-Ney baseline.

        Validation and test figures of the model, and the baseline on the same test
        ids; the per-epoch perplexities are in the training run's learning-curve plot.
        """
        key = model.input_key
        report: dict[str, Any] = {}
        for split in ("validation", "test"):
            ppl, acc, n = perplexity(trained, self.dataset(reader, model, split, 256))
            name = "valid" if split == "validation" else "test"
            report[f"{name}_perplexity"] = ppl
            report[f"{name}_accuracy"] = acc  # the most likely next token is the right one
            report[f"{name}_tokens"] = n
        feat = feature_of(reader.stats, key)
        if feat.get("tokenizer") == "words" and self.baseline_order:
            started = time.perf_counter()
            vocab = [feat["unk"] or "<unk>", *feat["vocab"]]

            def words(split: str) -> list[str]:
                ids = stream_of(read_windows(reader.dataset_dir, split, reader.feature_spec,
                                             key))
                return [vocab[i] for i in ids]

            kn = KneserNeyBaseline(order=self.baseline_order).fit(words("train"))
            # Score the tokens the network is scored on: every id after a split's first.
            report["baseline_kn_perplexity"] = kn.perplexity(words("test"), start=1)
            report["baseline_kn_order"] = self.baseline_order
            report["baseline_kn_discount"] = kn.discount
            report["baseline_seconds"] = time.perf_counter() - started
            report["improvement_over_baseline"] = (
                1.0 - report["test_perplexity"] / report["baseline_kn_perplexity"])
            log.info("Kneser-Ney %d-gram baseline: test perplexity %.2f (%.0fs)",
                     self.baseline_order, report["baseline_kn_perplexity"],
                     report["baseline_seconds"])
        return EvalOutput(report)
