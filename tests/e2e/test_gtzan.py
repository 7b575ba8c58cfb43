"""gtzan_genres end to end on a tiny set in GTZAN's real layout: bad WAVs quarantined,
a real Airflow run, the registry, MLflow plots, and REST answers to base64 WAVs."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from tasks.features.audio import wav_bytes
from tests.conftest import serving

pytestmark = pytest.mark.slow

RATE = 22_050
GENRES = ("pop", "classical", "jazz", "metal")


def genre_clip(genre: int, i: int, rate: int = RATE, seconds: float = 12.0) -> np.ndarray:
    """A clip whose spectrum depends on the genre (harmonics, noise, pulse rate)."""
    rng = np.random.default_rng([genre, i])
    t = np.arange(int(seconds * rate)) / rate
    f0 = [220.0, 330.0, 150.0, 90.0][genre] * rng.uniform(0.9, 1.1)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k ** [1.0, 2.5, 1.5, 0.4][genre]
            for k in range(1, 8))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * [2.0, 0.3, 2.7, 5.0][genre] * t) ** 2)
    x = x + [0.05, 0.01, 0.1, 0.5][genre] * rng.normal(size=t.size)
    return 0.9 * x / np.abs(x).max()


def write_gtzan(root: Path, per_genre: int) -> Path:
    """GTZAN's layout: genres/<genre>/<genre>.000NN.wav, plus a genre the book leaves out."""
    for g, genre in enumerate(GENRES):
        (root / genre).mkdir(parents=True)
        for i in range(per_genre):
            (root / genre / f"{genre}.{i:05d}.wav").write_bytes(wav_bytes(genre_clip(g, i),
                                                                          RATE))
    (root / "blues").mkdir()
    (root / "blues" / "blues.00000.wav").write_bytes(wav_bytes(genre_clip(0, 99), RATE))
    return root


def test_gtzan_runs_quarantines_bad_wavs_registers_and_serves(airflow_db, own_mlflow,
                                                              tmp_path):
    from tasks.core.config import settings
    from tasks.orchestration.dag_factory import build_dag
    from tasks.spec import catalog
    from tasks.tracking import configure

    root = write_gtzan(tmp_path / "genres", per_genre=4)
    good = (root / "jazz" / "jazz.00003.wav").read_bytes()
    (root / "jazz" / "jazz.00004.wav").write_bytes(good[: len(good) // 3])  # truncated
    (root / "metal" / "metal.00004.wav").write_bytes(
        wav_bytes(genre_clip(3, 6, rate=16_000), 16_000))  # wrong sample rate
    before = {p: p.read_bytes() for p in root.rglob("*.wav")}

    spec = catalog.get("gtzan_genres")
    # Tiny and quick: 12 s clips instead of GTZAN's 30 s (the model cuts 5 s from each
    # end, so 12 s leave 2 s of MFCC frames), a relaxed gate, 2 bad files of 18 allowed.
    decoder = replace(spec.source.decoder, min_seconds=11.0, max_seconds=13.0)
    spec = replace(spec, source=replace(spec.source, decoder=decoder),
                   gate=replace(spec.gate, min_value=-1.0),
                   preprocess=replace(spec.preprocess, max_bad_fraction=0.12))
    dr = build_dag(spec).test(logical_date=datetime(2026, 5, 1, tzinfo=UTC),
                              run_conf={"source_dir": str(root), "epochs": 20})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert set(states.values()) == {"success"}, states

    # Bad media: quarantined with file and reason; raw files untouched.
    quarantine = next((settings().root / "runs" / "gtzan_genres").rglob("*.quarantine.jsonl"))
    bad = {Path(r["file"]).name: r["reason"]
           for r in map(json.loads, quarantine.read_text().splitlines())}
    assert set(bad) == {"jazz.00004.wav", "metal.00004.wav"}
    assert bad["jazz.00004.wav"].startswith("truncated: the header declares 264600 frames")
    assert bad["metal.00004.wav"] == "sample rate 16000 Hz, expected 22050 Hz"
    assert {p: p.read_bytes() for p in root.rglob("*.wav")} == before

    client = configure()
    mv = client.get_model_version_by_alias("gtzan_genres", "champion")
    run = client.get_run(mv.run_id)
    assert "test_accuracy" in run.data.metrics
    plots = {a.path for a in client.list_artifacts(mv.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/mfcc_per_genre.png"} <= plots
    manifest = json.loads(next((settings().root / "runs" / "gtzan_genres")
                               .rglob("dataset/manifest.json")).read_text())
    # 4 valid clips per genre dealt 70/30 -> 3 train + 1 test each; blues is not read.
    assert manifest["splits"]["train"]["class_counts"] == {"0": 3, "1": 3, "2": 3, "3": 3}
    assert manifest["splits"]["test"]["class_counts"] == {"0": 1, "1": 1, "2": 1, "3": 1}

    with serving(("gtzan_genres",)) as base:
        url = f"{base}/v1/models/gtzan_genres:predict"
        clip = base64.b64encode(good).decode()
        r = httpx.post(url, json={"instances": [{"b64": clip}, {"wav": {"b64": clip}}]},
                       timeout=60)
        assert r.status_code == 200, r.text
        probs = np.array(r.json()["predictions"])
        assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
        assert np.allclose(probs[0], probs[1])
        r = httpx.post(url, json={"instances": [{"b64": "not base64!"}]}, timeout=30)
        assert r.status_code == 400 and "invalid base64" in r.json()["error"]
        other_rate = base64.b64encode((root / "metal" / "metal.00004.wav").read_bytes())
        r = httpx.post(url, json={"instances": [{"b64": other_rate.decode()}]}, timeout=30)
        assert r.status_code == 400 and "sample rate must be 22050" in r.json()["error"]
