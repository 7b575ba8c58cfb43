"""Keras layers of served text models: text in, token ids, answers out (self-contained).

- ``TextToIds``: the Keras twin of :func:`tasks.features.text.tokens` and the vocabulary
  lookup Beam does (:func:`tasks.features.text.line_ids`): same tokens, same ids (a parity
  test checks it); empty text, and unknown tokens of a vocabulary without ``<unk>``, fail
  with a message the server answers as HTTP 400;
- ``NextTokens``: a language model's answers per text: ``next`` (top tokens after the
  text), ``probabilities``, ``predicted`` (the most likely token after each input token:
  the input shifted by one) and ``perplexity`` (of the text's tokens).

Keras and TensorFlow only (MLflow logs this file with the model, so it loads elsewhere);
created and registered on first use.
"""

from __future__ import annotations

from typing import Any

# The number pattern of tasks.features.text.NUMBER (a test checks they are equal).
NUMBER = r"[0-9][0-9.,:/-]*|N"

_CLASSES: dict[str, type] = {}


def text_layers() -> dict[str, type]:
    """The Keras layers of served language models (created and registered on first use)."""
    if _CLASSES:
        return _CLASSES
    import keras
    import tensorflow as tf

    def lookup(vocabulary: list[str], unk: str | None, invert: bool = False) -> Any:
        return keras.layers.StringLookup(
            vocabulary=list(vocabulary), num_oov_indices=1, mask_token=None,
            oov_token=unk or "[UNK]", invert=invert)

    @keras.saving.register_keras_serializable(package="mlp")
    class TextToIds(keras.layers.Layer):
        """Tokenise like :func:`tasks.features.text.tokens` and map tokens to ids like Beam.

        Returns right-padded ids ``(batch, max_len)`` (a start token first when the
        vocabulary has one) and each text's token count (without the start token).
        """

        def __init__(self, vocabulary: list[str], tokenizer: str, unk: str | None,
                     start: str | None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.vocabulary = list(vocabulary)
            self.tokenizer = tokenizer
            self.unk = unk
            self.start = start
            self._lookup = lookup(self.vocabulary, unk)

        def build(self, input_shape: Any) -> None:
            self.built = True  # the lookup table is complete at construction

        def call(self, text: Any) -> Any:
            text = tf.reshape(tf.convert_to_tensor(text, tf.string), [-1])
            if self.tokenizer == "chars":
                toks = tf.strings.unicode_split(text, "UTF-8")
            else:
                toks = tf.strings.split(text)
                lower = tf.strings.lower(toks.flat_values, encoding="utf-8")
                number = tf.strings.regex_full_match(toks.flat_values, NUMBER)
                toks = toks.with_flat_values(tf.where(number, "N", lower))
            lengths = tf.cast(toks.row_lengths(), tf.int32)
            # The checks gate the ids (control dependencies), so a bad input is refused
            # with their message, never by a later op (e.g. an embedding lookup of -1).
            checks = [tf.debugging.assert_positive(
                lengths, message="empty text: send at least one token (word or character)")]
            ids = tf.cast(self._lookup(toks.flat_values), tf.int32)
            if not self.unk:  # no <unk>: ids are vocabulary indices; unknown is an error
                checks.append(tf.debugging.assert_positive(
                    ids, message="unknown character or token: the model knows only "
                                 + "".join(self.vocabulary[:50])))
                ids = ids - 1
            with tf.control_dependencies(checks):
                ids = tf.identity(ids)
                lengths = tf.identity(lengths)
            ids = toks.with_flat_values(ids)
            if self.start:
                first = tf.fill([tf.shape(text)[0], 1], self.vocabulary.index(self.start)
                                + (1 if self.unk else 0))
                ids = tf.concat([tf.RaggedTensor.from_tensor(first), ids], axis=1)
            return ids.to_tensor(0), lengths

        def compute_output_spec(self, text: Any) -> Any:
            return (keras.KerasTensor((None, None), "int32"), keras.KerasTensor((None,),
                                                                                 "int32"))

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "vocabulary": self.vocabulary,
                    "tokenizer": self.tokenizer, "unk": self.unk, "start": self.start}

    @keras.saving.register_keras_serializable(package="mlp")
    class NextTokens(keras.layers.Layer):
        """Answers of a language model for each text (see the module docstring)."""

        def __init__(self, vocabulary: list[str], unk: str | None, start: str | None,
                     joiner: str, top_k: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.vocabulary = list(vocabulary)
            self.unk = unk
            self.start = start
            self.joiner = joiner
            self.top_k = int(top_k)
            self._words = lookup(self.vocabulary, unk, invert=True)

        def build(self, input_shape: Any) -> None:
            self.built = True  # the lookup table is complete at construction

        def _token(self, ids: Any) -> Any:
            return self._words(ids if self.unk else ids + 1)

        def call(self, inputs: Any) -> Any:
            ids, lengths, probs = inputs
            off = 1 if self.start else 0  # the start token's prediction is for token 1
            n = tf.shape(ids)[0]
            last = tf.gather(probs, lengths - 1 + off, batch_dims=1)
            top_p, top_i = tf.math.top_k(last, k=self.top_k)
            # Prediction after each input token, and the probability of each actual next.
            preds = probs[:, off:]
            best = tf.argmax(preds, axis=-1, output_type=tf.int32)
            width = tf.shape(preds)[1]
            mask = tf.sequence_mask(lengths, width)
            words = tf.where(mask, self._token(best), "")
            predicted = tf.strings.reduce_join(
                tf.RaggedTensor.from_tensor(words, lengths=lengths), axis=1,
                separator=self.joiner)
            # log p(token t | tokens < t) for t = 1..len-1 (and t = 0 after a start token)
            nxt = ids[:, 1:]
            p = tf.gather(probs[:, :-1], nxt, batch_dims=2)
            scored = tf.sequence_mask(lengths - 1 + off, tf.shape(nxt)[1])
            nll = -tf.reduce_sum(tf.where(scored, tf.math.log(tf.maximum(p, 1e-12)), 0.0), 1)
            count = tf.cast(lengths - 1 + off, tf.float32)
            ppl = tf.where(count > 0, tf.exp(nll / tf.maximum(count, 1.0)), float("nan"))
            del n
            return {"next": self._token(top_i), "probabilities": top_p,
                    "predicted": predicted, "perplexity": ppl}

        def compute_output_spec(self, inputs: Any) -> Any:
            return {"next": keras.KerasTensor((None, self.top_k), "string"),
                    "probabilities": keras.KerasTensor((None, self.top_k), "float32"),
                    "predicted": keras.KerasTensor((None,), "string"),
                    "perplexity": keras.KerasTensor((None,), "float32")}

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "vocabulary": self.vocabulary, "unk": self.unk,
                    "start": self.start, "joiner": self.joiner, "top_k": self.top_k}

    _CLASSES.update(TextToIds=TextToIds, NextTokens=NextTokens)
    return _CLASSES
