"""Media-folder source: layouts, per-file validation and quarantine, cap, per-class splits."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from tasks.data.media import MediaError, MediaFolderSource, WavDecoder
from tasks.data.sources import SourceError
from tasks.spec import Feature, PreprocessSpec, SplitSpec
from tasks.steps.ingest import ingest, snapshot_files, snapshot_origins
from tasks.steps.preprocess import PreprocessError, preprocess

RATE = 8000
CLASSES = ("low", "high")


def write_wav(path: Path, x: np.ndarray, rate: int = RATE, channels: int = 1) -> Path:
    """16-bit PCM WAV of float samples in [-1, 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def tone(freq: float, seconds: float = 1.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=t.size)).astype(
        np.float32)


def stats_features(waves: list[np.ndarray], rate: int) -> dict[str, np.ndarray]:
    """Two per-clip numbers: RMS and zero-crossing rate (enough to tell the tones apart)."""
    rms = np.array([np.sqrt(np.mean(w ** 2)) for w in waves], np.float32)
    zcr = np.array([np.mean(np.abs(np.diff(np.sign(w)))) / 2 * rate for w in waves],
                   np.float32)
    return {"rms": rms, "zcr": zcr}


DECODER = WavDecoder(sample_rate=RATE, channels=1, min_seconds=0.5, max_seconds=2.0,
                     features=stats_features,
                     feature_schema={"rms": {"dtype": "float32", "shape": []},
                                     "zcr": {"dtype": "float32", "shape": []}})


def make_folder(root: Path, per_class: int = 10) -> Path:
    for i in range(per_class):
        write_wav(root / "low" / f"low.{i:05d}.wav", tone(200 + 5 * i, seed=i))
        write_wav(root / "high" / f"high.{i:05d}.wav", tone(1500 + 5 * i, seed=100 + i))
    (root / "high" / "notes.txt").write_text("not media")
    write_wav(root / "other" / "other.00000.wav", tone(700))  # undeclared class: ignored
    return root


PREP = PreprocessSpec(features=(Feature("rms"), Feature("zcr")), label="label",
                      max_bad_fraction=0.2, batch_size=4)


def run(tmp_path: Path, source: MediaFolderSource, location: Path, split: SplitSpec,
        name: str = "ds") -> tuple[dict, Path]:
    snap = tmp_path / "raw" / name
    manifest = ingest(source, str(location), snap)
    assert manifest["checksum"]
    out = tmp_path / "datasets" / name
    return preprocess(source, snapshot_files(snap), PREP, split, out,
                      origins=snapshot_origins(snap)), out


def test_folder_layout_keys_labels_and_ignored_files(tmp_path):
    root = make_folder(tmp_path / "genres")
    src = MediaFolderSource(DECODER, CLASSES, default_location=str(root))
    files = src.files(str(root))
    assert len(files) == 20 and "low/low.00000.wav" in files
    assert not any("notes" in k or k.startswith("other/") for k in files)
    facts = src.validate(files)
    assert facts["per_class"] == {"low": 10, "high": 10}
    batches = list(src.read_batches(files, "all", 8))
    assert [len(b["row"]) for b in batches] == [8, 8, 4]
    labels = np.concatenate([b["label"] for b in batches])
    zcr = np.concatenate([b["zcr"] for b in batches])
    # Features computed per batch, labels from the folder: high tones cross zero more.
    assert zcr[labels == 1].min() > 2 * zcr[labels == 0].max()


def test_missing_class_folder_and_empty_class_fail_naming_them(tmp_path):
    root = make_folder(tmp_path / "genres")
    src = MediaFolderSource(DECODER, ("low", "high", "mid"), default_location=str(root))
    with pytest.raises(SourceError, match=r"genres/mid: missing folder of class 'mid'"):
        src.files(str(root))
    (root / "mid").mkdir()
    with pytest.raises(SourceError, match=r"no \.wav files for class\(es\) \['mid'\]"):
        src.validate(src.files(str(root)))


def test_wav_decoder_reasons(tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(300))
    assert DECODER.decode(str(good)).shape == (RATE,)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[: 44 + 3000])
    with pytest.raises(MediaError, match=r"truncated: the header declares 8000 frames "
                                         r"\(1.00 s\), the file holds 1500"):
        DECODER.decode(str(truncated))
    rate = write_wav(tmp_path / "rate.wav", tone(300, rate=16000), rate=16000)
    with pytest.raises(MediaError, match="sample rate 16000 Hz, expected 8000 Hz"):
        DECODER.decode(str(rate))
    stereo = write_wav(tmp_path / "stereo.wav", np.repeat(tone(300), 2), channels=2)
    with pytest.raises(MediaError, match="2 channels, expected 1"):
        DECODER.decode(str(stereo))
    short = write_wav(tmp_path / "short.wav", tone(300, seconds=0.2))
    with pytest.raises(MediaError, match=r"duration 0.20 s outside \[0.5, 2.0\] s"):
        DECODER.decode(str(short))
    text = tmp_path / "text.wav"
    text.write_text("hello, not audio")
    with pytest.raises(MediaError, match="not a readable PCM WAV file"):
        DECODER.decode(str(text))


def test_bad_files_are_quarantined_with_file_and_reason_raw_untouched(tmp_path):
    root = make_folder(tmp_path / "genres")
    good = (root / "low" / "low.00001.wav").read_bytes()
    (root / "low" / "low.00001.wav").write_bytes(good[: len(good) // 2])  # truncated
    write_wav(root / "high" / "high.00003.wav", tone(1500, rate=11025), rate=11025)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    src = MediaFolderSource(DECODER, CLASSES, default_location=str(root),
                            split_counts={"train": 6, "test": 2})
    split = SplitSpec(partition_to_split={"train": "train", "test": "test"},
                      stratify_by="label", shards={"train": 1, "validation": 1, "test": 1})
    manifest, out = run(tmp_path, src, root, split)
    quarantine = out.parent / f"{out.name}.quarantine.jsonl"
    bad = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert [(Path(b["file"]).name, b["value"]) for b in bad] == [
        ("high.00003.wav", "high/high.00003.wav"), ("low.00001.wav", "low/low.00001.wav")]
    assert bad[0]["reason"] == "sample rate 11025 Hz, expected 8000 Hz"
    assert bad[1]["reason"].startswith("truncated: the header declares 8000 frames")
    # The quarantine names the user's file (and the snapshot copy); raw files untouched.
    assert [b["file"] for b in bad] == [str(root / "high" / "high.00003.wav"),
                                        str(root / "low" / "low.00001.wav")]
    assert all("/raw/ds/" in b["snapshot_file"] for b in bad)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    # Per-class split counts after validation: 6 + 2 of each class's 9 valid files.
    assert manifest["splits"]["train"]["class_counts"] == {"0": 6, "1": 6}
    assert manifest["splits"]["test"]["class_counts"] == {"0": 2, "1": 2}
    assert manifest["quarantined_rows"] == 2


def test_too_many_bad_files_fail_naming_the_first(tmp_path):
    root = make_folder(tmp_path / "genres", per_class=4)
    for i in range(2):
        (root / "low" / f"low.{i:05d}.wav").write_bytes(b"RIFF....garbage")
    src = MediaFolderSource(DECODER, CLASSES, default_location=str(root))
    split = SplitSpec(partition_to_split={"all": "ratio"}, stratify_by="label",
                      ratios={"train": 0.5, "test": 0.5},
                      shards={"train": 1, "validation": 1, "test": 1})
    with pytest.raises(PreprocessError, match=r"2 of 8 rows are bad .*low.00000.wav row \d "
                                              r"field 'file': not a readable PCM WAV"):
        run(tmp_path, src, root, split)


def test_cap_keeps_the_first_valid_files_and_split_counts_deal_them(tmp_path):
    root = make_folder(tmp_path / "genres")
    (root / "low" / "low.00000.wav").write_bytes(b"not a wav")  # the cap skips past it
    src = MediaFolderSource(DECODER, CLASSES, default_location=str(root), max_per_class=5,
                            split_counts={"train": 3, "test": 1}, seed=3)
    files = src.files(str(root))
    parts = {p: [b for b in src.read_batches(files, p, 100)] for p in src.partitions()}
    kept = {p: sorted(f for b in bs for f in b["file"]) for p, bs in parts.items()}
    # The cap is min(max_per_class, 3 + 1) = 4 valid files per class, in name order:
    # low 00001..00004 (00000 is bad), high 00000..00003; 3 + 1 of them dealt per class.
    assert len(kept["train"]) == 6 and len(kept["test"]) == 2
    assert sorted(kept["train"] + kept["test"]) == sorted(
        [f"low/low.{i:05d}.wav" for i in range(1, 5)]
        + [f"high/high.{i:05d}.wav" for i in range(4)])
    assert [b["value"] for b in parts["train"][0]["_bad"]] == ["low/low.00000.wav"]
    assert parts["test"][0]["_bad"] == []
    # Seeded: the same seed deals the same files, another seed others.
    again = {p: sorted(f for b in src.read_batches(files, p, 100) for f in b["file"])
             for p in src.partitions()}
    assert again == kept


def test_manifest_variant_labels_from_csv_and_unknown_label_quarantined(tmp_path):
    media = tmp_path / "clips"
    rows = ["path,label"]
    for i in range(6):
        write_wav(media / f"a{i}.wav", tone(200 + 10 * i, seed=i))
        write_wav(media / "sub" / f"a{i}.wav", tone(1600 + 10 * i, seed=50 + i))
        rows += [f"a{i}.wav,low", f"sub/a{i}.wav,high"]
    rows.append("a0.wav,middle")
    (media / "labels.csv").write_text("\n".join(rows) + "\n")
    src = MediaFolderSource(DECODER, CLASSES, default_location=str(media),
                            manifest="labels.csv")
    files = src.files(str(media))
    # Same file name under two labels: distinct keys, and distinct snapshot files.
    assert "low/000002-a0.wav" in files and "high/000003-a0.wav" in files
    split = SplitSpec(partition_to_split={"all": "ratio"}, stratify_by="label",
                      ratios={"train": 0.5, "test": 0.5},
                      shards={"train": 1, "validation": 1, "test": 1})
    manifest, out = run(tmp_path, src, media, split)
    assert manifest["splits"]["train"]["rows"] + manifest["splits"]["test"]["rows"] == 12
    bad = [json.loads(x) for x in (out.parent / "ds.quarantine.jsonl").read_text().split("\n")
           if x]
    assert len(bad) == 1 and bad[0]["value"] == "middle/000014-a0.wav"
    assert bad[0]["reason"] == "label 'middle' is not one of ['low', 'high']"
    snap = tmp_path / "raw" / "ds"
    assert (snap / "low" / "000002-a0.wav").is_file()
    assert (snap / "high" / "000003-a0.wav").is_file()


def test_manifest_errors_name_file_and_line(tmp_path):
    media = tmp_path / "clips"
    write_wav(media / "a.wav", tone(300))
    (media / "labels.csv").write_text("path,label\na.wav,low\nmissing.wav,high\n")
    src = MediaFolderSource(DECODER, CLASSES, default_location=str(media),
                            manifest="labels.csv")
    with pytest.raises(SourceError, match=r"labels.csv line 3: file .*missing.wav does not "
                                          r"exist"):
        src.files(str(media))
    (media / "labels.csv").write_text("file,genre\na.wav,low\n")
    with pytest.raises(SourceError, match=r"labels.csv: the header must start with "
                                          r"'path,label'"):
        src.files(str(media))
