"""Audio features: the TensorFlow MFCC statistics against the book's library, and parity
between the Beam side (decoded waveforms) and the served model (WAV bytes in)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tasks.data.media import WavDecoder
from tasks.features.audio import BOOK, audio_layers, clip_features, wav_bytes

RATE = 22_050


def book_features(wave: np.ndarray) -> np.ndarray:
    """The book's code, verbatim in substance: python_speech_features + numpy."""
    from python_speech_features import mfcc

    n = len(wave)
    audio = wave[RATE * 5:n - RATE * 5].astype(np.float64)
    feat = mfcc(audio, RATE, 0.02, 0.01, 15, 26, 441, 0, None, 0.97, 22, True,
                lambda x: np.hamming(x))
    feat = np.apply_along_axis(lambda a: (a - np.mean(a)) / np.std(a), 1, feat)
    mean = np.mean(feat, axis=0)
    flat = np.triu(np.cov(feat, rowvar=0), k=0).flatten()
    flat = np.delete(flat, np.arange(len(flat))[flat == 0])
    return np.concatenate([mean, flat])


def clips(seed: int = 0) -> list[np.ndarray]:
    """Quantised (16-bit) clips of different lengths: tones, noise, a silent stretch."""
    rng = np.random.default_rng(seed)
    out = []
    for i, seconds in enumerate((30.0, 30.0, 29.4, 12.0)):
        t = np.arange(int(seconds * RATE)) / RATE
        x = 0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
        x += 0.05 * rng.normal(size=t.size)
        if i == 1:
            x[RATE * 8:RATE * 11] = 0.0
        out.append((np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32))
    return out


def test_tf_features_match_python_speech_features():
    waves = clips()
    ours = clip_features(waves, RATE)
    ref = np.stack([book_features(w) for w in waves])
    assert ours.shape == ref.shape == (4, BOOK.width) == (4, 135)
    # float64 throughout, cast to float32 at the end: agreement to float32 precision.
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_served_wav_layer_computes_the_training_features(tmp_path):
    """Beam side: WAV file -> WavDecoder -> clip_features. Served: WAV bytes -> layer."""
    waves = clips(1)[:3]
    decoder = WavDecoder(sample_rate=RATE, features=lambda w, r: {"f": clip_features(w, r)},
                         feature_schema={"f": {"dtype": "float32", "shape": [135]}})
    blobs = []
    for i, w in enumerate(waves):
        path = tmp_path / f"clip{i}.wav"
        path.write_bytes(wav_bytes(w, RATE))
        blobs.append(path.read_bytes())
    beam_side = decoder.columns([decoder.decode(str(tmp_path / f"clip{i}.wav"))
                                 for i in range(3)])["f"]
    layer = audio_layers()["WavClipFeatures"]({})
    served = layer(tf.constant(blobs)).numpy()
    np.testing.assert_array_equal(served, beam_side)


def test_wav_layer_refuses_other_rates_and_short_clips():
    layer = audio_layers()["WavClipFeatures"]({})
    t = np.arange(RATE * 12) / 16000
    with pytest.raises(tf.errors.InvalidArgumentError, match="sample rate must be 22050"):
        layer(tf.constant([wav_bytes(0.2 * np.sin(2 * np.pi * 440 * t), 16000)]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 10.03 s long"):
        layer(tf.constant([wav_bytes(np.zeros(RATE * 4), RATE)]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        layer(tf.constant([b"RIFF not really a wav file"]))


def test_model_with_the_wav_front_end_saves_and_loads(tmp_path):
    import keras

    from tasks.features.audio import WavInput

    raw, feats = WavInput().build()
    out = keras.layers.Dense(2, activation="softmax")(feats)
    model = keras.Model(raw, out)
    example = tf.constant(list(WavInput().example()))
    before = model(example).numpy()
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again(example).numpy(), before, rtol=1e-6)
    assert again.inputs[0].dtype == "string"
