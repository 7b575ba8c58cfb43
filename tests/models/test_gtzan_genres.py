"""gtzan_genres: the fluidsynth generator writes GTZAN's layout and format, seeded."""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from models.gtzan_genres import GENRES, SOUNDFONT, SPEC, generate
from tasks.features.audio import clip_features

needs_synth = pytest.mark.skipif(
    (shutil.which("fluidsynth") is None or not Path(SOUNDFONT).is_file())
    and os.environ.get("CI") != "true",
    reason="fluidsynth/fluid-soundfont-gm missing (make install adds them)")


@pytest.mark.slow
@needs_synth
def test_generator_writes_gtzan_format_seeded_and_genre_distinct(tmp_path):
    generate(tmp_path / "a", 1, 7, chunk=1)
    generate(tmp_path / "b", 1, 7, genres=("jazz",), chunk=1)
    waves = []
    for genre in GENRES:
        path = tmp_path / "a" / genre / f"{genre}.00000.wav"
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (
                22_050, 1, 2, 30 * 22_050)
        waves.append(SPEC.source.decoder.decode(str(path)))
        assert 0.2 < np.abs(waves[-1]).max() < 1.0  # normalised, not silent, not clipped
    # Each clip depends only on (seed, genre, index): same bytes when generated alone.
    assert (tmp_path / "b" / "jazz" / "jazz.00000.wav").read_bytes() == (
        tmp_path / "a" / "jazz" / "jazz.00000.wav").read_bytes()
    feats = clip_features(waves, 22_050)
    dist = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    assert dist[np.triu_indices(4, 1)].min() > 0.5  # four different sounds


def test_spec_declares_the_book_setup():
    src = SPEC.source
    assert src.classes == ("pop", "classical", "jazz", "metal")
    assert dict(src.split_counts) == {"train": 70, "test": 30} and src.cap == 100
    assert (src.decoder.sample_rate, src.decoder.channels) == (22_050, 1)
    assert len(SPEC.preprocess.features) == 135
    assert SPEC.gate.min_value == 0.9305
