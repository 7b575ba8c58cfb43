"""Text sources: UTF-8 files with one document or sentence per line, and the PTB layout.

- :class:`TextSource` implements the platform's ``DataSource`` protocol. Its ``layout``
  maps each source partition to a file name: the PTB layout is ``ptb.train.txt``,
  ``ptb.valid.txt`` and ``ptb.test.txt``; any other file of lines works the same way.
  A missing or empty (0 bytes, or blank lines only) file fails the run with its name.
  A line that is not valid UTF-8 is kept out of the data and quarantined with the file,
  its line number, the offending bytes and the decoder's reason. Blank lines are
  separators, not rows. Batches hold many lines (numpy object arrays), never one.
- :func:`build_english_corpus` writes the default corpus of ``ptb_lm``: real English from
  Debian packages, normalised to PTB's conventions (see its docstring).

Tokenising, the text feature and id windows are in :mod:`tasks.features.text`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.sources import GENERATED, SourceError, generated_location, layout_files

PTB_LAYOUT = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
# Source partition -> dataset split, for sources in the PTB layout (valid is validation).
PTB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}


@dataclass(frozen=True)
class TextSource:
    """UTF-8 text files, one document or sentence per line (PTB layout by default).

    ``default_location`` may be ``bundled:<words>:<seed>``: the real English corpus of
    :func:`build_english_corpus` is then written once (under ``$MLP_HOME/generated``) in
    the PTB layout and snapshotted like any raw data.

    Attributes:
        layout: Partition -> file name.
        default_location: Directory searched when a run names no source.
        column: Name of the text column in the batches.
        generator: ``generator(target_dir, words, seed)`` for ``bundled:`` locations.

    """

    layout: Mapping[str, str] = field(default_factory=lambda: dict(PTB_LAYOUT))
    default_location: str = "bundled:1000000:0"
    column: str = "text"
    generator: Any = None

    def files(self, location: str) -> dict[str, str]:
        """Partition -> file path (builds the bundled corpus for ``bundled:`` locations)."""
        if location.startswith(GENERATED):
            location = str(self._generate(location))
        return layout_files(location, self.layout)

    def _generate(self, location: str) -> Path:
        return generated_location(location, self.generator, self.generator.__name__
                                  if self.generator else "text", unit="words")

    def check(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Cheap check for ``mlp validate``: every file holds some text.

        Each file is read only up to its first non-blank byte; lines that are not valid
        UTF-8 are found, and quarantined, when the data is read (:meth:`validate`).

        Raises:
            SourceError: A file is empty (0 bytes) or holds only blank lines.

        """
        facts = {}
        for part, path in files.items():
            size = Path(path).stat().st_size
            _require_text(path, part, size)
            facts[part] = {"bytes": size}
        return facts

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Reject empty files (0 bytes or blank lines only); count lines and bad lines."""
        facts = {}
        for part, path in files.items():
            size = Path(path).stat().st_size
            _require_text(path, part, size)
            rows, bad = self._lines(path)
            if not rows and not bad:  # e.g. Unicode spaces only
                raise SourceError(f"{path}: no text, only blank lines ({size} bytes)")
            facts[part] = {"lines": len(rows), "bad_lines": len(bad), "bytes": size}
        return facts

    def partitions(self) -> dict[str, dict[str, str]]:
        """Partition -> {column: file key}."""
        return {part: {self.column: part} for part in self.layout}

    def schema(self) -> dict[str, dict[str, Any]]:
        """One string column."""
        return {self.column: {"dtype": "string", "shape": []}}

    def read_batches(self, files: Mapping[str, str], partition: str, batch_size: int
                     ) -> Iterator[dict[str, Any]]:
        """Yield ``{"row", <column>, "_bad"}`` batches of ``batch_size`` lines in file order.

        ``row`` is the 0-based line number; invalid UTF-8 lines travel in ``_bad``.
        """
        path = files[partition]
        rows, bad = self._lines(path)
        records = [{"file": path, "partition": partition, "line": i + 1, "row": i,
                    "field": self.column, "value": repr(raw[:80]), "reason": reason}
                   for i, raw, reason in bad]
        if not rows:
            yield {"row": np.empty(0, np.int64), self.column: np.empty(0, object),
                   "_bad": records}
            return
        numbers = np.fromiter((i for i, _ in rows), np.int64, len(rows))
        texts = np.empty(len(rows), object)
        texts[:] = [t for _, t in rows]
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            yield {"row": numbers[start:stop], self.column: texts[start:stop],
                   "_bad": records if start == 0 else []}

    @staticmethod
    def _lines(path: str) -> tuple[list[tuple[int, str]], list[tuple[int, bytes, str]]]:
        """Non-blank decoded lines ``(line index, text)`` and bad ones ``(index, bytes, why)``."""
        data = Path(path).read_bytes()
        try:  # fast path: the whole file is valid UTF-8
            lines = data.decode("utf-8").split("\n")
            return [(i, t.rstrip("\r")) for i, t in enumerate(lines) if t.strip()], []
        except UnicodeDecodeError:
            pass
        rows, bad = [], []
        for i, raw in enumerate(data.split(b"\n")):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad.append((i, raw, f"invalid UTF-8: {exc.reason} at byte {exc.start}"))
                continue
            if text.strip():
                rows.append((i, text.rstrip("\r")))
        return rows, bad


def _require_text(path: str, part: str, size: int) -> None:
    """Fail on a file of 0 bytes or of blank lines only, naming it."""
    if size == 0:
        raise SourceError(f"{path}: empty file (0 bytes); the {part} partition needs at "
                          "least one line of text")
    with open(path, "rb") as fh:
        if not any(chunk.strip() for chunk in iter(lambda: fh.read(1 << 16), b"")):
            raise SourceError(f"{path}: no text, only blank lines ({size} bytes)")


# --------------------------------------------------------------------------- corpus
WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Fortune files of prose (pictures, code and the offensive set are left out).
FORTUNE_FILES = (
    "fortunes", "wisdom", "literature", "people", "humorists", "science", "politics", "law",
    "education", "work", "love", "men-women", "miscellaneous", "platitudes", "news", "food",
    "pets", "sports", "kids", "medicine", "magic", "songs-poems", "goedel", "computers",
    "paradoxum", "drugs", "cookie", "definitions", "riddles", "ethnic", "tao", "zippy",
    "startrek", "pratchett", "linux", "debian",
)
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*|[0-9]+(?:[.,:/-][0-9]+)*")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def ptb_sentence(text: str) -> str:
    """Raw English -> one line in PTB's conventions.

    Lower case, clitics split (``don't`` -> ``do n't``, ``it's`` -> ``it 's``), numbers
    -> ``N``, punctuation dropped, tokens separated by one space.
    """
    out = []
    for tok in _WORD.findall(text.lower().replace("\u2019", "'")):
        if tok[0].isdigit():
            out.append("N")
            continue
        m = _CLITIC.match(tok)
        out.extend(m.groups() if m else (tok,))
    return " ".join(out)


def _wordnet_documents() -> Iterator[list[str]]:
    """One document per WordNet synset: its definition and each usage example."""
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET_DIR / f"data.{pos}", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or " | " not in line:
                    continue
                gloss = line.split(" | ", 1)[1].strip()
                parts = [p.strip().strip('"') for p in gloss.split(";")]
                yield [p for p in parts if p]


def _fortune_documents() -> Iterator[list[str]]:
    """One document per fortune cookie, split into sentences; attributions dropped."""
    for name in FORTUNE_FILES:
        path = FORTUNES_DIR / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for cookie in text.split("\n%\n"):
            body = "\n".join(ln for ln in cookie.splitlines()
                             if not ln.strip().startswith("--"))
            sentences = _SENTENCE_END.split(" ".join(body.split()))
            yield [s for s in sentences if s]


def build_english_corpus(target: Path, words: int, seed: int) -> None:
    """Write a real-English corpus of about ``words`` words in the PTB layout.

    Sources (Debian packages, installed by ``make data-text``): WordNet 3.0's glosses and
    usage examples (``wordnet-base``; one document per synset) and the prose fortune
    cookies (``fortunes``; one document per cookie). GCIDE (``dict-gcide``) is not used:
    its entries are mostly headwords, etymologies and citation markup rather than
    running sentences. Every sentence becomes one line in PTB's conventions
    (:func:`ptb_sentence`); the vocabulary cut to 10k with ``<unk>`` and the ``<eos>``
    markers are the preprocessing step's job, as for the real PTB files.

    Documents are ordered by a seeded hash, taken until ``words`` words, and dealt to
    train/valid/test by that order (85% / 7.5% / 7.5% of the words): a document never
    straddles two splits.
    """
    missing = [str(p) for p in (WORDNET_DIR / "data.noun", FORTUNES_DIR / "fortunes")
               if not p.is_file()]
    if missing:
        raise SourceError(f"{', '.join(missing)} missing: install the Debian packages "
                          "wordnet-base and fortunes (make data-text)")
    docs = []
    for kind, gen in (("wordnet", _wordnet_documents()), ("fortune", _fortune_documents())):
        for i, doc in enumerate(gen):
            lines = [s for s in (ptb_sentence(t) for t in doc) if s]
            if lines:
                key = hashlib.sha256(f"{seed}:{kind}:{i}".encode()).digest()
                docs.append((key, lines))
    docs.sort(key=lambda d: d[0])
    chosen, total = [], 0
    for _, lines in docs:
        if total >= words:
            break
        chosen.append(lines)
        total += sum(len(s.split()) for s in lines)
    bounds = {"train": 0.85 * total, "valid": 0.925 * total}
    out: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    seen = 0
    for lines in chosen:
        part = ("train" if seen < bounds["train"] else
                "valid" if seen < bounds["valid"] else "test")
        out[part].extend(lines)
        seen += sum(len(s.split()) for s in lines)
    for part, name in PTB_LAYOUT.items():
        (Path(target) / name).write_text("".join(f" {s} \n" for s in out[part]),
                                         encoding="utf-8")
