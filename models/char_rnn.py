"""Character RNN that completes '반갑습니다' (the book's first recurrent network).

The book: the five characters of '반갑습니다' one-hot encoded, a basic RNN cell of 5
units over the first four, a softmax layer (weights initialised to zero) predicting
each next character, ``sequence_loss``, RMSProp(0.01, decay 0.9), 100 iterations; after
training, '반갑습니' yields '갑습니다'. Keras 3's ``RMSprop`` calls TensorFlow 1's
``decay`` (the moving average's discount) ``rho``: ``RMSprop(0.01, rho=0.9)``.

Data: the sentence itself by default (one line, the same for training and checking, as
in the book); ``source_dir`` may hold any short text as ``text.txt``, one line per
sequence. The served model takes text and answers the shifted sequence (``predicted``),
the next characters with probabilities, and the text's perplexity; a character outside
the vocabulary is an HTTP 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.data.text import PTB_SPLITS, TextSource
from tasks.features.text import TextFeature
from tasks.spec import (
    GateSpec,
    ModelSpec,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
)

SENTENCE = "반갑습니다"


def book_sentence(target: Path, words: int, seed: int) -> None:
    """Write the book's sentence as the one line of ``text.txt``."""
    (Path(target) / "text.txt").write_text(SENTENCE + "\n", encoding="utf-8")


def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """One-hot characters -> SimpleRNN(5) -> softmax over the characters (zero weights)."""
    import keras

    n = int(stats["train"]["features"]["text"]["vocab_size"])
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    # A frozen identity embedding is the one-hot encoding, as a serialisable layer.
    x = keras.layers.Embedding(n, n, embeddings_initializer="identity", trainable=False,
                               name="one_hot")(ids)
    x = keras.layers.SimpleRNN(int(params.get("units", n)), return_sequences=True,
                               name="rnn")(x)
    out = keras.layers.Dense(n, activation="softmax", kernel_initializer="zeros",
                             name="next_char")(x)
    model = keras.Model(ids, out, name="char_rnn")
    model.compile(optimizer=keras.optimizers.RMSprop(float(params.get("learning_rate", 0.01)),
                                                     rho=float(params.get("rho", 0.9))),
                  loss="sparse_categorical_crossentropy")
    return model


SPEC = UseCaseSpec(
    name="char_rnn",
    description=__doc__ or "",
    source=TextSource(layout={"train": "text.txt", "valid": "text.txt", "test": "text.txt"},
                      default_location="bundled:0:0", generator=book_sentence),
    preprocess=PreprocessSpec(
        features=(TextFeature("text", tokenizer="chars", top_k=None, unk=None, eos=None,
                              sequence_length=len(SENTENCE) - 1),),
        label=None, batch_size=1024),
    split=SplitSpec(partition_to_split=dict(PTB_SPLITS),
                    shards={"train": 1, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="text", label_key=None,
                    objective="language_model"),
    # The book's result: every next character right ('반갑습니' -> '갑습니다').
    gate=GateSpec(metric="test_accuracy", min_value=1.0, higher_is_better=True,
                  max_regression=0.0),
    params={
        "epochs": RunParam(100, "integer", "Iterations (one batch each; the book: 100)",
                           minimum=1, maximum=10_000),
        "batch_size": RunParam(1, "integer", "Sequences per batch (the book: 1)", minimum=1,
                               maximum=1024),
        "learning_rate": RunParam(0.01, "number", "RMSProp learning rate", minimum=1e-6,
                                  maximum=1.0),
        "rho": RunParam(0.9, "number", "RMSProp decay (TF1 'decay', Keras 'rho')",
                        minimum=0.0, maximum=0.999),
        "units": RunParam(5, "integer", "RNN units (the book: 5)", minimum=1, maximum=256),
    },
    # The tiny end-to-end run, made with more checks by its dedicated test.
    smoke=SmokeTest("bundled:0:0", {"epochs": 20},
                    covered_by="tests/e2e/test_text_use_cases.py"),
    tags=("text", "language_model", "books"),
)
