"""Text as tokens: the one tokeniser, the text feature, token ids and id windows.

:func:`tokens` is the tokeniser Beam uses; the served model's ``TextToIds`` layer
(:mod:`tasks.features.text_layers`) does exactly the same in TensorFlow ops (a parity test
checks both give the same ids). The analyzer (:mod:`tasks.features.transforms`) builds the
top-k vocabulary with ``<unk>``; :func:`line_ids` and :func:`windows` turn lines into the
fixed-length id windows preprocessing writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.spec import Feature

UNK = "<unk>"
EOS = "<eos>"
# ASCII whitespace, as tf.strings.split splits: both sides tokenise identically.
_WS = re.compile(r"[ \t\n\r\f\v]+")
# A number token (PTB writes every number as "N"); "N" itself stays "N".
NUMBER = r"[0-9][0-9.,:/-]*|N"
_NUMBER = re.compile(NUMBER)


def tokens(line: str, tokenizer: str = "words") -> list[str]:
    """Tokens of one line, in PTB's conventions.

    Args:
        line: One line of text.
        tokenizer: ``words`` (split on ASCII whitespace, lower case, numbers -> ``N``) or
            ``chars`` (every Unicode character is a token, nothing changed).

    Returns:
        The tokens, without ``<eos>``.

    """
    if tokenizer == "chars":
        return list(line)
    return ["N" if _NUMBER.fullmatch(t) else t.lower() for t in _WS.split(line) if t]


@dataclass(frozen=True)
class TextFeature(Feature):
    """A text column turned into fixed-length token-id windows.

    Attributes:
        tokenizer: ``words`` or ``chars`` (see :func:`tokens`).
        top_k: Vocabulary size including ``<unk>`` (words beyond it map to ``<unk>``);
            None keeps every token.
        unk: Out-of-vocabulary token (id 0), or None: then ids are the vocabulary
            indices, and a line with an unknown token is quarantined (the served model
            answers 400 for it).
        eos: Token appended to every line (PTB's ``<eos>``), or None.
        sequence_length: Steps per training window; windows hold ``sequence_length + 1``
            ids (input and target shifted by one), cut from each batch's token stream
            with a stride of ``sequence_length``.

    """

    transform: str = "tokens"
    tokenizer: str = "words"
    top_k: int | None = 10_000
    unk: str | None = UNK
    eos: str | None = EOS
    sequence_length: int = 20


def line_ids(lines: Sequence[str], feature: TextFeature, vocab: Sequence[str]
             ) -> list[np.ndarray | None]:
    """Token ids of each line (``<eos>`` appended), as Beam writes them.

    Id 0 is ``<unk>`` when the feature has one; without, a line holding an unknown
    token gives None.
    """
    offset = 1 if feature.unk else 0
    index = {w: i + offset for i, w in enumerate(vocab)}
    out: list[np.ndarray | None] = []
    for line in lines:
        toks = tokens(line, feature.tokenizer)
        if feature.eos:
            toks.append(feature.eos)
        if feature.unk:
            out.append(np.fromiter((index.get(t, 0) for t in toks), np.int32, len(toks)))
        elif all(t in index for t in toks):
            out.append(np.fromiter((index[t] for t in toks), np.int32, len(toks)))
        else:
            out.append(None)
    return out


def windows(stream: np.ndarray, sequence_length: int) -> np.ndarray:
    """Cut a token-id stream into ``(n, sequence_length + 1)`` windows.

    The stride is ``sequence_length`` (each window's last id is the next window's first);
    the tail shorter than a window is dropped.
    """
    n = (len(stream) - 1) // sequence_length
    if n <= 0:
        return np.empty((0, sequence_length + 1), np.int32)
    idx = np.arange(n)[:, None] * sequence_length + np.arange(sequence_length + 1)
    return stream[idx].astype(np.int32)
