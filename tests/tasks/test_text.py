"""Text source (PTB layout, bad input), Beam tokenisation and vocabulary, serving parity."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tasks.data.sources import SourceError
from tasks.data.text import TextSource, ptb_sentence
from tasks.features.text import EOS, NUMBER, UNK, TextFeature, line_ids, tokens, windows
from tasks.spec import PreprocessSpec, SplitSpec
from tasks.steps.preprocess import PreprocessError, preprocess

TRAIN = [
    " the stock market fell N points in early trading ",
    " the market <unk> as investors sold shares ",
    " shares of the company rose N % ",
    " the company said it expects the market to recover ",
] * 5
VALID = [" the market rose ", " investors bought shares of the company "]
TEST = [" the stock market rose N points ", " a zebra sold the company "]


def write_ptb(path: Path, train=TRAIN, valid=VALID, test=TEST) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        (path / f"ptb.{name}.txt").write_text("".join(f"{s}\n" for s in lines))
    return path


FEATURE = TextFeature("text", top_k=12, sequence_length=5)
PREP = PreprocessSpec(features=(FEATURE,), label=None, batch_size=7)
SPLIT = SplitSpec(partition_to_split={"train": "train", "valid": "validation", "test": "test"},
                  shards={"train": 2, "validation": 1, "test": 1})


def test_tokens_follow_ptb_conventions():
    assert tokens("  The Stock 1,000.5 N n 3/4 Market\t") == [
        "the", "stock", "N", "N", "n", "N", "market"]
    assert tokens("반갑습니다", "chars") == ["반", "갑", "습", "니", "다"]
    assert ptb_sentence("Don't pay $1,200 -- it's 3.5% of John's!") == (
        "do n't pay N it 's N of john 's")


def test_windows_share_their_boundary_ids():
    w = windows(np.arange(12, dtype=np.int32), 5)
    assert w.tolist() == [[0, 1, 2, 3, 4, 5], [5, 6, 7, 8, 9, 10]]
    assert windows(np.arange(5, dtype=np.int32), 5).shape == (0, 6)


def test_ptb_loader_reads_the_three_files_in_batches(tmp_path):
    src = TextSource()
    files = src.files(str(write_ptb(tmp_path / "ptb")))
    assert set(files) == {"train", "valid", "test"}
    facts = src.validate(files)
    assert facts["train"]["lines"] == 20 and facts["valid"]["bad_lines"] == 0
    batches = list(src.read_batches(files, "train", 8))
    assert [len(b["row"]) for b in batches] == [8, 8, 4]
    assert batches[0]["text"][1] == TRAIN[1] and batches[2]["row"].tolist() == [16, 17, 18, 19]


def test_missing_and_empty_files_are_rejected_with_their_name(tmp_path):
    src = TextSource()
    ptb = write_ptb(tmp_path / "ptb")
    (ptb / "ptb.valid.txt").write_text("")
    for check in (src.check, src.validate):  # mlp validate, then ingest
        with pytest.raises(SourceError, match=r"ptb\.valid\.txt: empty file"):
            check(src.files(str(ptb)))
    (ptb / "ptb.valid.txt").write_text("\n  \r\n\n")
    for check in (src.check, src.validate):
        with pytest.raises(SourceError, match=r"ptb\.valid\.txt: no text, only blank lines"):
            check(src.files(str(ptb)))
    (ptb / "ptb.valid.txt").write_text("\u00a0\n")
    with pytest.raises(SourceError, match=r"ptb\.valid\.txt: no text, only blank lines"):
        src.validate(src.files(str(ptb)))
    (ptb / "ptb.test.txt").unlink()
    with pytest.raises(SourceError, match=r"missing test file ptb\.test\.txt"):
        src.files(str(ptb))


def test_invalid_utf8_lines_are_quarantined_with_file_and_line(tmp_path):
    ptb = write_ptb(tmp_path / "ptb")
    path = ptb / "ptb.train.txt"
    lines = path.read_bytes().split(b"\n")
    lines[3] = b" the caf\xe9 closed "  # Latin-1, not UTF-8
    path.write_bytes(b"\n".join(lines))
    src = TextSource()
    files = src.files(str(ptb))
    assert src.validate(files)["train"]["bad_lines"] == 1
    batches = list(src.read_batches(files, "train", 8))
    assert sum(len(b["row"]) for b in batches) == 19
    (bad,) = [r for b in batches for r in b["_bad"]]
    assert bad["file"] == str(path) and bad["line"] == 4 and bad["field"] == "text"
    assert "invalid UTF-8" in bad["reason"] and "caf" in bad["value"]

    # Preprocessing fails with the line named when bad lines exceed the tolerance ...
    with pytest.raises(PreprocessError, match=r"ptb\.train\.txt line 4 field 'text': "
                                              r"invalid UTF-8"):
        preprocess(src, files, PREP, SPLIT, tmp_path / "strict")
    assert json.loads((tmp_path / "strict.quarantine.jsonl").read_text())["line"] == 4
    # ... and quarantines them when they stay within it; the raw file is untouched.
    from dataclasses import replace

    manifest = preprocess(src, files, replace(PREP, max_bad_fraction=0.1), SPLIT,
                          tmp_path / "lenient")
    assert manifest["quarantined_rows"] == 1
    assert path.read_bytes().split(b"\n")[3] == b" the caf\xe9 closed "


def _records(ds_dir: Path, split: str) -> np.ndarray:
    from tasks.core.files import read_json
    from tasks.objectives.language_model import read_windows

    return read_windows(ds_dir, split, read_json(ds_dir / "feature_spec.json"), "text")


def test_beam_writes_top_k_vocabulary_and_id_windows(tmp_path):
    from tasks.core.files import read_json
    from tasks.objectives.language_model import stream_of

    src = TextSource()
    files = src.files(str(write_ptb(tmp_path / "ptb")))
    out = tmp_path / "ds"
    preprocess(src, files, PREP, SPLIT, out)
    stats = read_json(out / "stats.json")["train"]["features"]["text"]
    counts = Counter(t for s in TRAIN for t in [*tokens(s), EOS])
    expected = sorted(((t, c) for t, c in counts.items() if t != UNK),
                      key=lambda kv: (-kv[1], kv[0]))[:11]
    assert stats["vocab"] == [t for t, _ in expected]  # top-k minus <unk>, by count
    assert stats["vocab_size"] == 12 and stats["tokens"] == sum(counts.values())
    assert 0 < stats["unk_rate"] < 1
    spec = read_json(out / "feature_spec.json")["text"]
    assert spec["shape"] == [6] and spec["vocab_size"] == 12
    # The test split's windows are its lines' ids, in file order, cut with stride 5.
    test = _records(out, "test")
    want = np.concatenate(line_ids(TEST, FEATURE, stats["vocab"]))
    got = stream_of(test)
    assert len(got) == 1 + 5 * ((len(want) - 1) // 5)
    assert got.tolist() == want[:len(got)].tolist()
    assert want.tolist().count(0) >= 1  # "zebra" is out of the vocabulary: <unk> = id 0
    train = _records(out, "train")
    assert len(train) == sum(r["rows"] for r in read_json(out / "manifest.json")
                             ["shards_written"] if r["split"] == "train")
    # Deterministic: the same input gives byte-identical shards.
    preprocess(src, files, PREP, SPLIT, tmp_path / "again")
    for rel in read_json(out / "manifest.json")["splits"]["train"]["files"]:
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()


def test_served_text_layer_maps_text_to_the_same_ids_as_beam():
    """Parity: Beam's tokeniser + vocabulary and the served model's TextToIds layer."""
    import tensorflow as tf

    from tasks.features import text_layers

    assert text_layers.NUMBER == NUMBER  # the layer's own copy of the number pattern
    layer_classes = text_layers.text_layers
    vocab = ["the", EOS, "market", "N", "stock", "über", "ça"]
    texts = ["the stock market", "  The  STOCK\tmarket 1,000 N ", "über ÜBER ça Ça",
             "zebra the 3/4 unknown-word", "a"]
    layer = layer_classes()["TextToIds"](vocabulary=vocab, tokenizer="words", unk=UNK,
                                         start=EOS)
    ids, lengths = layer(tf.constant(texts))
    beam = line_ids(texts, TextFeature("text", top_k=None, eos=None), vocab)
    start = vocab.index(EOS) + 1
    for row, n, want in zip(ids.numpy(), lengths.numpy(), beam, strict=True):
        assert n == len(want)
        assert row[0] == start and row[1:n + 1].tolist() == want.tolist()

    chars = layer_classes()["TextToIds"](vocabulary=list("반갑습니다"), tokenizer="chars",
                                         unk=None, start=None)
    ids, lengths = chars(tf.constant(["반갑습니", "다"]))
    assert ids.numpy()[0].tolist() == [0, 1, 2, 3] and lengths.numpy().tolist() == [4, 1]
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown character"):
        chars(tf.constant(["반갑x"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty text"):
        chars(tf.constant([""]))


def test_kneser_ney_baseline_gives_nltk_probabilities():
    """The indexed baseline answers exactly what an unmodified NLTK model answers."""
    from nltk.lm import KneserNeyInterpolated
    from nltk.util import everygrams

    from tasks.objectives.language_model import KneserNeyBaseline

    stream = [t for s in TRAIN + VALID for t in [*tokens(s), EOS]]
    ours = KneserNeyBaseline(order=3, discount=0.75).fit(stream)
    stock = KneserNeyInterpolated(3, discount=0.75)
    stock.fit([everygrams(stream, max_len=3)], vocabulary_text=stream)
    test = [t for s in TEST for t in [*tokens(s), EOS]]
    test = [t if t in stock.vocab else UNK for t in test]
    for i in range(2, len(test)):
        ctx = tuple(test[i - 2:i])
        assert ours.model.score(test[i], ctx) == pytest.approx(stock.score(test[i], ctx),
                                                               rel=1e-12)
    logs = [math.log(stock.score(test[i], tuple(test[max(0, i - 2):i])))
            for i in range(1, len(test))]
    assert ours.perplexity(test, start=1) == pytest.approx(math.exp(-sum(logs) / len(logs)))


def test_serving_validates_text_and_answers_text():
    from tasks.serving.app import _reason
    from tasks.serving.codec import BadRequest, parse_request
    from tasks.serving.signature import Signature
    from tasks.serving.store import _text

    sig = Signature("text", (), "string", "next", (5,), "string")
    batch, key = parse_request(b'{"instances": ["the stock market", "a"]}', sig)
    assert batch.tolist() == ["the stock market", "a"] and key == "predictions"
    for body in (b'{"instances": [null]}', b'{"instances": [3]}', b'{"instances": [["a"]]}'):
        with pytest.raises(BadRequest):
            parse_request(body, sig)
    out = np.array([[b"caf\xc3\xa9", b"<unk>"]], dtype=object)
    assert _text(out) == [["café", "<unk>"]]
    assert _text(np.array([1.5], np.float32)).dtype == np.float32
    msg = ("{{function_node __inference_f_1}} assertion failed: [empty text: send at least "
           "one token.  ] [Condition x > 0 did not hold element-wise:] [x (c) = ] [0]\n\t "
           "[[{{node n}}]] [Op:__inference_f_1]")
    assert _reason(msg) == "empty text: send at least one token."
