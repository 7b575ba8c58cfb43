"""Audio clip features in TensorFlow ops: the book's MFCC statistics, one implementation.

The same function, :func:`clip_features`, computes the features of the training data (in
Beam, on batches of decoded waveforms) and runs inside the exported model (the
:class:`WavClipFeatures` layer decodes a WAV with ``tf.audio.decode_wav`` and calls it),
so training and serving cannot compute different features. A test checks it against
``python_speech_features.mfcc``, the library the book calls.

The book's recipe (GTZAN genres), per clip:

1. cut ``trim_seconds`` (5 s) from each end of the waveform (``f[N_cut:N_total-N_cut]``);
2. MFCC as ``python_speech_features.mfcc(signal, 22050, winlen=0.02, winstep=0.01,
   numcep=15, nfilt=26, nfft=441, lowfreq=0, highfreq=None, preemph=0.97, ceplifter=22,
   appendEnergy=True, winfunc=np.hamming)``: pre-emphasis, 441-sample Hamming frames every
   221 samples (0.02 s and 0.01 s rounded half up; the last frame zero-padded), power
   spectrum of a 441-point FFT / 441, 26 triangular mel filters on FFT bins, log, DCT-II
   (orthonormal) keeping 15 cepstra, sinusoidal lifter 22, cepstrum 0 replaced by the log
   frame energy;
3. each frame's 15 coefficients standardised (``(a - mean(a)) / std(a)``);
4. features = the 15 per-coefficient means over frames + the upper triangle (with the
   diagonal, row by row) of their 15 x 15 covariance (``np.cov``, ddof 1): 15 + 120 = 135.

Everything runs in float64 (as numpy does), then the features are cast to float32.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(x).quantize(decimal.Decimal("1"),
                                           rounding=decimal.ROUND_HALF_UP))


@dataclass(frozen=True)
class MfccConfig:
    """The book's MFCC parameters (defaults) and clip trimming."""

    sample_rate: int = 22_050
    trim_seconds: float = 5.0
    winlen: float = 0.02
    winstep: float = 0.01
    numcep: int = 15
    nfilt: int = 26
    preemph: float = 0.97
    ceplifter: int = 22
    lowfreq: float = 0.0

    @property
    def frame_len(self) -> int:
        """Samples per frame (the book's ``nfft`` too)."""
        return _round_half_up(self.winlen * self.sample_rate)

    @property
    def frame_step(self) -> int:
        """Samples between frame starts."""
        return _round_half_up(self.winstep * self.sample_rate)

    @property
    def trim(self) -> int:
        """Samples cut from each end (the book's ``SampleFreq * 5``)."""
        return int(self.sample_rate * self.trim_seconds)

    @property
    def min_samples(self) -> int:
        """Shortest clip with at least two frames left after trimming."""
        return 2 * self.trim + self.frame_len + self.frame_step

    @property
    def width(self) -> int:
        """Number of features per clip: means plus the covariance's upper triangle."""
        return self.numcep + self.numcep * (self.numcep + 1) // 2

    def names(self) -> list[str]:
        """Feature column names: ``mfcc_mean_i`` then ``mfcc_cov_i_j`` (i <= j)."""
        rows, cols = np.triu_indices(self.numcep)
        return ([f"mfcc_mean_{i:02d}" for i in range(self.numcep)]
                + [f"mfcc_cov_{i:02d}_{j:02d}" for i, j in zip(rows, cols, strict=True)])

    def filterbank(self) -> np.ndarray:
        """The mel filterbank ``[nfilt, nfft//2 + 1]`` exactly as python_speech_features."""
        nfft = self.frame_len
        highfreq = self.sample_rate / 2
        lowmel = 2595 * np.log10(1 + self.lowfreq / 700.0)
        highmel = 2595 * np.log10(1 + highfreq / 700.0)
        mel = np.linspace(lowmel, highmel, self.nfilt + 2)
        bins = np.floor((nfft + 1) * (700 * (10 ** (mel / 2595.0) - 1)) / self.sample_rate)
        fb = np.zeros([self.nfilt, nfft // 2 + 1])
        for j in range(self.nfilt):
            for i in range(int(bins[j]), int(bins[j + 1])):
                fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
            for i in range(int(bins[j + 1]), int(bins[j + 2])):
                fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
        return fb


BOOK = MfccConfig()
_EPS = float(np.finfo(np.float64).eps)


def mfcc(signal: Any, cfg: MfccConfig = BOOK) -> Any:
    """MFCC of a batch of equal-length signals ``[batch, samples]`` -> ``[batch, frames, numcep]``.

    TensorFlow ops, float64; python_speech_features' algorithm with the book's Hamming
    window and ``nfft = frame_len``.
    """
    import tensorflow as tf

    x = tf.cast(signal, tf.float64)
    n = tf.shape(x)[1]
    x = tf.concat([x[:, :1], x[:, 1:] - cfg.preemph * x[:, :-1]], axis=1)
    flen, step = cfg.frame_len, cfg.frame_step
    frames_n = 1 + (tf.maximum(n - flen, 0) + step - 1) // step  # 1 + ceil((n - flen) / step)
    pad = (frames_n - 1) * step + flen - n
    x = tf.pad(x, [[0, 0], [0, pad]])
    frames = tf.signal.frame(x, flen, step) * tf.constant(np.hamming(flen), tf.float64)
    spec = tf.signal.rfft(frames, fft_length=[flen])
    pspec = tf.math.real(spec * tf.math.conj(spec)) / flen
    energy = tf.reduce_sum(pspec, axis=-1)
    eps = tf.constant(_EPS, tf.float64)
    energy = tf.where(energy == 0, eps, energy)
    feat = tf.tensordot(pspec, tf.constant(cfg.filterbank().T, tf.float64), axes=1)
    feat = tf.where(feat == 0, eps, feat)
    cep = tf.signal.dct(tf.math.log(feat), type=2, norm="ortho")[..., :cfg.numcep]
    lift = 1 + (cfg.ceplifter / 2.0) * np.sin(np.pi * np.arange(cfg.numcep) / cfg.ceplifter)
    cep = cep * tf.constant(lift, tf.float64)
    return tf.concat([tf.math.log(energy)[..., None], cep[..., 1:]], axis=-1)


def mfcc_statistics(cep: Any, cfg: MfccConfig = BOOK) -> Any:
    """Per-clip features from MFCC frames ``[batch, frames, numcep]`` -> ``[batch, width]``."""
    import tensorflow as tf

    mu = tf.reduce_mean(cep, axis=-1, keepdims=True)
    sd = tf.sqrt(tf.reduce_mean(tf.square(cep - mu), axis=-1, keepdims=True))
    z = (cep - mu) / sd  # the book's per-frame normalize()
    mean = tf.reduce_mean(z, axis=1)
    centred = z - mean[:, None, :]
    frames = tf.cast(tf.shape(z)[1], tf.float64)
    cov = tf.einsum("bfi,bfj->bij", centred, centred) / (frames - 1.0)
    rows, cols = np.triu_indices(cfg.numcep)
    upper = tf.gather(tf.reshape(cov, [-1, cfg.numcep * cfg.numcep]),
                      rows * cfg.numcep + cols, axis=1)
    return tf.cast(tf.concat([mean, upper], axis=1), tf.float32)


def trim(signal: Any, cfg: MfccConfig = BOOK) -> Any:
    """Cut ``cfg.trim`` samples from each end of ``[batch, samples]`` signals."""
    import tensorflow as tf

    n = tf.shape(signal)[1]
    return signal[:, cfg.trim:n - cfg.trim]


def clip_features_tf(waves: Any, cfg: MfccConfig = BOOK) -> Any:
    """Trim, MFCC and statistics of a batch of equal-length waveforms (TensorFlow ops)."""
    return mfcc_statistics(mfcc(trim(waves, cfg), cfg), cfg)


_COMPILED: dict[MfccConfig, Any] = {}


def clip_features(waves: list[np.ndarray], sample_rate: int, cfg: MfccConfig = BOOK,
                  chunk: int = 8) -> np.ndarray:
    """Features ``[n, width]`` float32 of decoded waveforms (any lengths), for Beam.

    Clips of equal length run together, ``chunk`` at a time (a 30 s clip's frames take
    ~7 MB in float64); the TensorFlow function is the one the served model runs.

    Raises:
        ValueError: The sample rate differs from the config's, or a clip is too short.

    """
    import tensorflow as tf

    if sample_rate != cfg.sample_rate:
        raise ValueError(f"features are defined at {cfg.sample_rate} Hz, got {sample_rate}")
    if cfg not in _COMPILED:
        _COMPILED[cfg] = tf.function(
            lambda w: clip_features_tf(w, cfg),
            input_signature=[tf.TensorSpec([None, None], tf.float64)])
    fn = _COMPILED[cfg]
    out = np.zeros((len(waves), cfg.width), np.float32)
    lengths = np.array([len(w) for w in waves])
    if len(waves) and lengths.min() < cfg.min_samples:
        raise ValueError(f"a clip has {lengths.min()} samples; at least {cfg.min_samples} "
                         f"are needed ({cfg.trim_seconds} s trimmed from each end)")
    for n in np.unique(lengths):
        idx = np.flatnonzero(lengths == n)
        for start in range(0, len(idx), chunk):
            sel = idx[start:start + chunk]
            batch = np.stack([np.asarray(waves[i], np.float64) for i in sel])
            out[sel] = fn(tf.constant(batch)).numpy()
    return out


def feature_columns(cfg: MfccConfig = BOOK) -> Any:
    """``features(waves, rate) -> {column: array}`` for :class:`tasks.data.media.WavDecoder`.

    One float32 column per feature (named by :meth:`MfccConfig.names`), so the platform's
    analyzers and packed-feature layout apply unchanged.
    """
    names = cfg.names()

    def features(waves: list[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
        feats = clip_features(waves, sample_rate, cfg)
        return {name: feats[:, i] for i, name in enumerate(names)}

    features.__qualname__ = f"mfcc_feature_columns[{cfg}]"
    return features


def feature_schema(cfg: MfccConfig = BOOK) -> dict[str, dict[str, Any]]:
    """Schema of :func:`feature_columns`' output."""
    return {name: {"dtype": "float32", "shape": []} for name in cfg.names()}


# --------------------------------------------------------------------------- Keras layers
_LAYERS: dict[str, type] = {}


def audio_layers() -> dict[str, type]:
    """The registered Keras layers of this module (created and registered on first use).

    Call before loading a saved model that contains them.
    """
    if _LAYERS:
        return _LAYERS
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="mlp")
    class WavClipFeatures(keras.layers.Layer):
        """WAV file bytes ``[batch]`` (string) -> clip features ``[batch, width]``.

        Decodes 16-bit PCM with ``tf.audio.decode_wav`` (samples / 32768, as the training
        decoder), mixes several channels down to mono, refuses another sample rate or a
        clip too short to trim (``InvalidArgumentError``: the server answers 400), then
        runs :func:`clip_features_tf`.
        """

        def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.config = dict(config or {})
            self.cfg = MfccConfig(**self.config)

        def _one(self, wav: Any) -> Any:
            cfg = self.cfg
            audio, rate = tf.audio.decode_wav(wav)
            tf.debugging.assert_equal(
                rate, tf.constant(cfg.sample_rate, tf.int32),
                message=f"the WAV's sample rate must be {cfg.sample_rate} Hz")
            tf.debugging.assert_greater_equal(
                tf.shape(audio)[0], cfg.min_samples,
                message=f"the clip must be at least {cfg.min_samples / cfg.sample_rate:.2f} s "
                        f"long ({cfg.trim_seconds} s are cut from each end)")
            mono = tf.reduce_mean(audio, axis=1)
            return clip_features_tf(mono[None, :], cfg)[0]

        def call(self, wavs: Any) -> Any:
            wavs = tf.reshape(wavs, [-1])
            return tf.map_fn(self._one, wavs,
                             fn_output_signature=tf.TensorSpec([self.cfg.width], tf.float32))

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, int]:
            return (input_shape[0], self.cfg.width)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "config": self.config}

    _LAYERS["WavClipFeatures"] = WavClipFeatures
    return _LAYERS


@dataclass(frozen=True)
class WavInput:
    """The served model's input: WAV bytes (REST: ``{"b64": ...}``) -> the feature columns.

    ``ModelSpec.serving_input`` takes this object: :meth:`build` gives the Keras input and
    the tensor of source feature columns the platform's transform layer then receives;
    :meth:`example` gives two WAV files for the MLflow signature and input example.
    """

    cfg: MfccConfig = BOOK
    name: str = "wav"

    def build(self) -> tuple[Any, Any]:
        """``(keras.Input of dtype string, features tensor [batch, width])``."""
        import keras

        raw = keras.Input(shape=(), dtype="string", name=self.name)
        cfg = {k: getattr(self.cfg, k) for k in MfccConfig.__dataclass_fields__}
        return raw, audio_layers()["WavClipFeatures"](cfg, name="wav_features")(raw)

    def example(self) -> np.ndarray:
        """Two short WAV files (tones, ``min_samples`` long) as a string batch."""
        rate, n = self.cfg.sample_rate, self.cfg.min_samples + self.cfg.sample_rate
        t = np.arange(n) / rate
        return np.asarray([wav_bytes(0.3 * np.sin(2 * np.pi * f * t), rate)
                           for f in (220.0, 880.0)], dtype=object)


def wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono PCM WAV file bytes of float samples in [-1, 1)."""
    import io
    import wave

    pcm = np.clip(np.round(np.asarray(x) * 32768), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()
