"""Music genre classification (the book's GTZAN system): MFCC statistics + a small DNN.

**The book**: 4 of GTZAN's 10 genres (pop, classical, jazz, metal; 100 clips each, 30 s,
22,050 Hz mono 16-bit WAV), 5 s cut from each end, MFCC (winlen 0.02 s, step 0.01 s,
15 cepstra, 26 filters, pre-emphasis 0.97, lifter 22; Hamming window, nfft 441), each
frame standardised, per-clip features = MFCC means + the upper triangle of their
covariance (135 numbers), 70/30 split, DNN 135 -> 25 (ReLU) -> 4 (softmax) with dropout
0.5 on the first layer's **weights** (``tf.nn.dropout(W_1, keep_prob)``, as here: a
``WeightDropoutDense`` layer), truncated-normal(0.1) weights and 0.1 biases, Adam 1e-4
on the whole training set per step; test accuracy 0.93051.

**Deviations from the book, and why**: mini-batches of 16 for 300 epochs instead of
3,000-8,000 full-batch steps (a Keras epoch costs bookkeeping; same order of updates);
the DNN is trained by Keras, not a TF 1 session; the clips are generated (below) unless a
GTZAN folder is given.

**Data**: the real GTZAN folder layout (``genres/<genre>/<genre>.000NN.wav``) via
``source_dir`` (only the four genres' folders are read), or by default a seeded
generator of the same layout and format (below). Files are checked one by one (readable
PCM WAV, 22,050 Hz, mono, 16-bit, 29-31 s); bad ones are quarantined with the reason.
Each genre keeps its first 100 valid clips, dealt 70 train / 30 test per genre.

**Features** run in Beam, in batches, with :func:`tasks.features.audio.clip_features`
(TensorFlow ops); the served model holds the same function behind a WAV decoder, so it
takes a base64 WAV (``{"instances": [{"b64": "..."}]}``) and returns the 4 genre
probabilities. A malformed base64 value is a 400; a WAV at another sample rate or
shorter than 10.03 s is refused by the model (400).

**The generator** (default data: ``synthetic:100:0``, 100 clips per genre, seed 0)
renders MIDI-like patterns with the real instrument samples of Debian's
``fluid-soundfont-gm`` (FluidR3 GM) through ``fluidsynth``. Per clip, a seeded random
arrangement is drawn from its genre's distribution:

- *pop*: 92-130 BPM, straight 8ths; kick on 1 and 3, snare/clap on 2 and 4, closed
  hi-hat 8ths, crash every 4 bars; a major-key I-V-vi-IV-style loop on piano, electric
  piano, guitar or a synth pad; electric or synth bass on the root; a repeating
  pentatonic hook on a synth lead, voice or flute.
- *classical*: 56-112 BPM, no drums; a string ensemble, solo piano (Alberti/arpeggio
  accompaniment), woodwind/horn ensemble or harp + strings; functional progressions in
  major or minor, long notes, stepwise melody, smooth velocity swells.
- *jazz*: 100-210 BPM, swung 8ths (ratio 0.60-0.70); ride-cymbal pattern and hi-hat on
  2 and 4; walking acoustic bass with chromatic approach notes; rootless 7th/9th chords
  comped off the beat on piano, electric piano, vibraphone or jazz guitar; bebop-like
  lines on sax, trumpet, muted trumpet or clarinet.
- *metal*: 110-210 BPM, minor/phrygian riffs on distortion/overdrive guitar power
  chords (palm-muted 8th/16th chugs), picked bass on the roots, double-kick 8ths/16ths,
  snare on 2 and 4 or blast beats, crash/china accents, sometimes a high lead line.

Within-genre variation: key, tempo, instruments from each genre's pool, note density,
per-channel volume, pan, reverb and chorus sends, loudness (peak 0.25-0.95 of full
scale) and background noise (SNR 25-50 dB). Genres overlap on purpose so the task is
not trivial: ~20% of pop clips are piano/strings ballads without drums or rock songs
on overdriven guitar, ~20% of jazz clips are slow brush ballads or straight-8ths fusion
on electric piano and bass, ~15% of metal clips open with a long clean-guitar intro and
~15% of classical clips are fast staccato pieces. Clips are rendered in chunks (one
MIDI file and one ``fluidsynth`` process per chunk, clips 32 s apart so reverb tails
end before the next clip) in parallel processes, then cut to exactly 30 s, mixed to
mono and written as 16-bit PCM. The same (clips per genre, seed) gives the same files.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import wave
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.media import MediaFolderSource, WavDecoder
from tasks.features.audio import BOOK, WavInput, feature_columns, feature_schema
from tasks.spec import (
    Feature,
    GateSpec,
    ModelSpec,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SplitSpec,
    UseCaseSpec,
)

GENRES = ("pop", "classical", "jazz", "metal")  # the book's label order
RATE = 22_050
CLIP_SECONDS = 30
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

# --------------------------------------------------------------------------- MIDI
_TICKS_PER_SECOND = 960  # division 480 at the default 120 BPM: times are in seconds


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[float, int, bytes]]) -> None:
    """A format-0 Standard MIDI File of ``(seconds, order, message)`` events."""
    track = bytearray()
    last = 0
    for t, _, msg in sorted(events, key=lambda e: (round(e[0] * _TICKS_PER_SECOND), e[1])):
        tick = round(t * _TICKS_PER_SECOND)
        track += _vlq(tick - last) + msg
        last = tick
    track += b"\x00\xff\x2f\x00"
    with open(path, "wb") as fh:
        fh.write(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480))
        fh.write(b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


class Clip:
    """Notes and controller settings of one clip, in seconds from the clip's start."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, bytes]] = []
        self.channels: dict[int, int] = {}

    def program(self, ch: int, program: int, rng: np.random.Generator, volume: tuple = (70, 110),
                bank: int = 0) -> int:
        """Set a channel's instrument and random volume, pan, reverb and chorus sends."""
        self.channels[ch] = program
        for cc, (lo, hi) in ((7, volume), (10, (24, 104)), (91, (10, 80)), (93, (0, 50))):
            self.events.append((0.0, 1, bytes([0xB0 | ch, cc, int(rng.integers(lo, hi))])))
        if bank:
            self.events.append((0.0, 1, bytes([0xB0 | ch, 0, bank])))
        self.events.append((0.0, 2, bytes([0xC0 | ch, program])))
        return ch

    def note(self, ch: int, pitch: int, start: float, dur: float, vel: float) -> None:
        """One note (clipped to the clip and to MIDI's pitch and velocity ranges)."""
        if start >= CLIP_SECONDS or dur <= 0:
            return
        pitch, vel = int(np.clip(pitch, 0, 127)), int(np.clip(vel, 1, 127))
        end = min(start + dur, CLIP_SECONDS + 0.5)
        self.events.append((start, 4, bytes([0x90 | ch, pitch, vel])))
        self.events.append((end, 3, bytes([0x80 | ch, pitch, 0])))


# --------------------------------------------------------------------------- music
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
DORIAN = (0, 2, 3, 5, 7, 9, 10)
PHRYGIAN = (0, 1, 3, 5, 7, 8, 10)
DRUMS = 9


def _deg(scale: tuple[int, ...], d: int) -> int:
    return 12 * (d // len(scale)) + scale[d % len(scale)]


def _chord(scale: tuple[int, ...], d: int, size: int = 3) -> list[int]:
    return [_deg(scale, d + 2 * i) for i in range(size)]


def _beats(tempo: float) -> np.ndarray:
    return np.arange(0, CLIP_SECONDS + 1, 60.0 / tempo)


def _pop(c: Clip, rng: np.random.Generator) -> None:
    style = rng.choice(["band", "ballad", "rock"], p=[0.8, 0.1, 0.1])
    tempo = rng.uniform(70, 90) if style == "ballad" else rng.uniform(92, 130)
    beat = 60.0 / tempo
    key = 48 + int(rng.integers(0, 12))
    prog = [[0, 4, 5, 3], [5, 3, 0, 4], [0, 5, 3, 4], [3, 4, 0, 0]][int(rng.integers(0, 4))]
    pool = {"band": [0, 4, 5, 24, 25, 88, 89], "ballad": [0, 1], "rock": [29, 29, 30]}[style]
    harm = c.program(0, int(rng.choice(pool)), rng)
    bass = c.program(1, int(rng.choice([33, 34, 38, 39])), rng)
    lead = c.program(2, int(rng.choice([80, 81, 52, 53, 73, 54])), rng, volume=(80, 120))
    if style == "ballad":
        pad = c.program(3, int(rng.choice([48, 49, 89])), rng, volume=(50, 90))
    hook = [(int(rng.choice([0, 2, 4, 7, 9, 12, 14])), float(rng.choice([0.5, 1.0])))
            for _ in range(8)]
    n_bars = int(CLIP_SECONDS / (4 * beat)) + 1
    pattern = rng.choice(["beats", "eighths", "offbeat"])
    for bar in range(n_bars):
        t0 = bar * 4 * beat
        chord = [key + p for p in _chord(MAJOR, prog[bar % 4])]
        hits = {"beats": [0, 1, 2, 3], "eighths": np.arange(8) / 2,
                "offbeat": [0.5, 1.5, 2.5, 3.5]}[pattern]
        if style == "ballad":
            for i, p in enumerate(chord + [chord[0] + 12]):
                c.note(harm, p, t0 + i * beat, 4 * beat - i * beat, rng.uniform(45, 75))
            for p in chord:
                c.note(pad, p + 12, t0, 4 * beat, rng.uniform(40, 65))
        else:
            for h in hits:
                for p in chord:
                    c.note(harm, p + (12 if style != "rock" else 0), t0 + h * beat, 0.45 * beat,
                           rng.uniform(60, 95))
        root = key - 12 + _deg(MAJOR, prog[bar % 4])
        for h in (np.arange(8) / 2 if rng.random() < 0.6 else [0, 1.5, 2, 3]):
            c.note(bass, root, t0 + h * beat, 0.45 * beat, rng.uniform(75, 105))
        t = t0
        for p, d in hook if bar % 2 == 0 or rng.random() < 0.5 else hook[:4]:
            if rng.random() < 0.85:
                c.note(lead, key + 12 + p, t, d * beat * 0.9, rng.uniform(70, 105))
            t += d * beat
        if style == "ballad":
            continue
        for b in range(4):
            tb = t0 + b * beat
            if b in (0, 2):
                c.note(DRUMS, 36, tb, 0.1, rng.uniform(90, 120))
            if b in (1, 3):
                c.note(DRUMS, int(rng.choice([38, 38, 39, 40])), tb, 0.1, rng.uniform(85, 115))
            for e in (0, 0.5):
                c.note(DRUMS, 42, tb + e * beat, 0.05, rng.uniform(55, 85))
        if bar % 4 == 0:
            c.note(DRUMS, 49, t0, 0.5, rng.uniform(80, 110))


def _classical(c: Clip, rng: np.random.Generator) -> None:
    fast = rng.random() < 0.15
    tempo = rng.uniform(110, 140) if fast else rng.uniform(56, 112)
    beat = 60.0 / tempo
    scale = MAJOR if rng.random() < 0.5 else MINOR
    key = 48 + int(rng.integers(0, 12))
    texture = rng.choice(["strings", "piano", "winds", "harp"])
    melody_prog, low_prog, mid_prog = {
        "strings": (40, 42, 48), "piano": (0, 0, 0), "winds": (73, 70, 60),
        "harp": (int(rng.choice([40, 73, 68])), 46, 49)}[str(texture)]
    if fast:
        mid_prog = 45 if texture == "strings" else mid_prog  # pizzicato strings
    mel = c.program(0, melody_prog, rng)
    low = c.program(1, low_prog, rng)
    mid = c.program(2, mid_prog, rng, volume=(55, 95))
    progs = [[0, 3, 4, 0], [0, 5, 1, 4], [0, 3, 1, 4], [5, 3, 4, 0], [0, 4, 5, 2]]
    prog = progs[int(rng.integers(0, len(progs)))]
    n_bars = int(CLIP_SECONDS / (4 * beat)) + 1
    degree = 7 + int(rng.integers(0, 5))
    phase = rng.uniform(0, 2 * np.pi)
    for bar in range(n_bars):
        t0 = bar * 4 * beat
        chord = [key + p for p in _chord(scale, prog[bar % 4])]
        dyn = 70 + 25 * np.sin(phase + bar / 3.0)  # slow swells
        if texture == "piano" or fast:
            figure = [0, 2, 1, 2] if rng.random() < 0.5 else [0, 1, 2, 1]  # Alberti / arpeggio
            step = 0.25 if fast else 0.5
            for i, h in enumerate(np.arange(0, 4, step)):
                c.note(low, chord[figure[i % 4]] - 12, t0 + h * beat,
                       (0.3 if fast else 0.9) * step * beat, dyn - 15 + rng.uniform(-8, 8))
        else:
            c.note(low, chord[0] - 12, t0, 4 * beat, dyn - 10)
            for p in chord[1:]:
                c.note(mid, p, t0, 4 * beat, dyn - 20 + rng.uniform(-5, 5))
        t = t0
        while t < t0 + 4 * beat - 1e-6:
            d = float(rng.choice([0.5, 1, 1, 2] if not fast else [0.25, 0.5, 0.5, 1]))
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 1, 1, 2]), 3, 16))
            c.note(mel, key + _deg(scale, degree), t, d * beat * (0.5 if fast else 0.98),
                   dyn + rng.uniform(-6, 6))
            t += d * beat


def _jazz(c: Clip, rng: np.random.Generator) -> None:
    style = rng.choice(["swing", "ballad", "fusion"], p=[0.8, 0.1, 0.1])
    tempo = {"swing": rng.uniform(100, 210), "ballad": rng.uniform(58, 80),
             "fusion": rng.uniform(95, 125)}[str(style)]
    beat = 60.0 / tempo
    swing = rng.uniform(0.60, 0.70) if style != "fusion" else 0.5
    key = 48 + int(rng.integers(0, 12))
    comp_pool = {"swing": [0, 4, 11, 26], "ballad": [0], "fusion": [4, 5]}[str(style)]
    comp = c.program(0, int(rng.choice(comp_pool)), rng)
    bass = c.program(1, 32 if style != "fusion" else int(rng.choice([33, 35])), rng)
    horn = c.program(2, int(rng.choice([65, 66, 56, 59, 71, 11])), rng, volume=(80, 120))
    if style == "ballad":
        c.events.append((0.0, 1, bytes([0xB0 | DRUMS, 0, 0])))
        c.events.append((0.0, 2, bytes([0xC0 | DRUMS, 40])))  # brush kit
    prog = [(1, DORIAN), (4, MAJOR), (0, MAJOR), (0, MAJOR)]
    n_bars = int(CLIP_SECONDS / (4 * beat)) + 1
    line = 9

    def sw(x: float) -> float:  # swung position of an 8th-note grid point (in beats)
        return np.floor(x) + (swing if x % 1 else 0.0)

    for bar in range(n_bars):
        t0 = bar * 4 * beat
        d, _ = prog[bar % 4]
        chord = [key + p for p in _chord(MAJOR, d, 4)]  # 7th chords
        root = key - 24 + _deg(MAJOR, d)
        nxt = key - 24 + _deg(MAJOR, prog[(bar + 1) % 4][0])
        walk = [root, root + int(rng.choice([3, 4, 7])), root + int(rng.choice([7, 9, 10])),
                nxt + int(rng.choice([-1, 1]))]
        for b, p in enumerate(walk):
            c.note(bass, p, t0 + b * beat, 0.9 * beat, rng.uniform(70, 100))
        hits = [0, 1.5, 2.5, 3.5] if style != "ballad" else [0, 2]
        for h in hits:
            if rng.random() < 0.7:
                voicing = chord[1:] + [chord[0] + 14]  # rootless, with the 9th
                for p in voicing:
                    c.note(comp, p, t0 + sw(h) * beat, (0.4 if style != "ballad" else 1.8)
                           * beat, rng.uniform(45, 80))
        if style != "ballad" or rng.random() < 0.6:
            x = 0.0
            while x < 4:
                if rng.random() < 0.8:
                    line = int(np.clip(line + rng.choice([-2, -1, 1, 2, -1, 1]), 4, 18))
                    p = key + 12 + _deg(DORIAN, line) + (int(rng.choice([0, 0, 0, -1])))
                    c.note(horn, p, t0 + sw(x) * beat, 0.45 * beat, rng.uniform(70, 110))
                x += 0.5 if style != "ballad" else 1.0
        for b in range(4):
            tb = t0 + b * beat
            vel = 0.6 if style == "ballad" else 1.0
            if style == "fusion":
                c.note(DRUMS, 42, tb, 0.05, 70)
                c.note(DRUMS, 42, tb + 0.5 * beat, 0.05, 60)
                if b in (1, 3):
                    c.note(DRUMS, 38, tb, 0.1, 90)
                if b in (0, 2):
                    c.note(DRUMS, 36, tb, 0.1, 95)
                continue
            c.note(DRUMS, 51, tb, 0.2, rng.uniform(60, 90) * vel)
            if b in (1, 3):
                c.note(DRUMS, 51, tb + swing * beat, 0.2, rng.uniform(50, 75) * vel)
                c.note(DRUMS, 44, tb, 0.1, rng.uniform(55, 80) * vel)
            if rng.random() < 0.2:
                c.note(DRUMS, 38, tb + swing * beat, 0.1, rng.uniform(35, 60) * vel)
            if rng.random() < 0.15:
                c.note(DRUMS, 36, tb, 0.1, rng.uniform(40, 60) * vel)


def _metal(c: Clip, rng: np.random.Generator) -> None:
    doom = rng.random() < 0.1
    tempo = rng.uniform(60, 85) if doom else rng.uniform(110, 210)
    beat = 60.0 / tempo
    root = 38 + int(rng.integers(0, 6))  # D2..G2
    scale = PHRYGIAN if rng.random() < 0.5 else MINOR
    gtr = c.program(0, int(rng.choice([30, 30, 29])), rng, volume=(90, 120))
    gtr2 = c.program(3, int(rng.choice([30, 29])), rng, volume=(70, 110))
    bass = c.program(1, int(rng.choice([34, 33, 38])), rng)
    lead = c.program(2, 30, rng, volume=(80, 115)) if rng.random() < 0.5 else None
    intro = CLIP_SECONDS * rng.uniform(0.4, 0.7) if rng.random() < 0.15 else 0.0
    if intro:
        clean = c.program(4, int(rng.choice([24, 25, 27])), rng)
        t, i = 0.0, 0
        while t < intro:
            c.note(clean, root + 12 + _deg(scale, [0, 2, 4, 7][i % 4]), t, 2 * beat,
                   rng.uniform(50, 80))
            t += 0.5 * beat
            i += 1
    riff = [int(rng.choice([0, 0, 0, 1, 2, 3, 4, 5, 6])) for _ in range(8)]
    sub = 0.25 if (rng.random() < 0.6 and not doom) else 0.5
    blast = rng.random() < 0.25 and not doom
    n_bars = int(CLIP_SECONDS / (4 * beat)) + 1
    for bar in range(n_bars):
        t0 = bar * 4 * beat
        if t0 + 4 * beat <= intro:
            continue
        for k, h in enumerate(np.arange(0, 4, sub)):
            th = t0 + h * beat
            if th < intro:
                continue
            r = root + _deg(scale, riff[(k // 2) % len(riff)])
            dur = sub * beat * (0.5 if k % 4 else 0.95)  # palm-muted chugs, accents ring
            for ch in (gtr, gtr2):
                for p in (r, r + 7, r + 12):
                    c.note(ch, p, th, dur, rng.uniform(95, 127))
            c.note(bass, r - 12, th, dur, rng.uniform(90, 120))
            c.note(DRUMS, 36, th, 0.05, rng.uniform(95, 127))
            if blast and k % 2 == 1:
                c.note(DRUMS, 38, th, 0.05, rng.uniform(90, 120))
        for b in (1, 3):
            if not blast and t0 + b * beat >= intro:
                c.note(DRUMS, 38, t0 + b * beat, 0.1, rng.uniform(105, 127))
        if t0 >= intro:
            c.note(DRUMS, int(rng.choice([49, 57, 52])), t0, 0.5, rng.uniform(95, 127))
            for h in np.arange(0, 4, 1.0):
                c.note(DRUMS, int(rng.choice([42, 51, 53])), t0 + h * beat, 0.1, 80)
        if lead is not None and bar % 2 == 1 and t0 >= intro:
            x = 0.0
            deg = 7
            while x < 4:
                deg = int(np.clip(deg + rng.choice([-1, 1, -2, 2]), 4, 14))
                c.note(lead, root + 24 + _deg(MINOR, deg), t0 + x * beat, 0.24 * beat,
                       rng.uniform(90, 120))
                x += 0.25


COMPOSERS = {"pop": _pop, "classical": _classical, "jazz": _jazz, "metal": _metal}
GAP = 32.0  # seconds between clip starts in a chunk's MIDI file (tails die out)


def _render_chunk(genre: str, clips: list[int], seed: int, out_dir: Path, soundfont: str,
                  work: Path) -> None:
    """Compose clips, render them with one fluidsynth process, cut, mix down, write WAVs."""
    events: list[tuple[float, int, bytes]] = []
    post = []
    for k, idx in enumerate(clips):
        rng = np.random.default_rng([seed, GENRES.index(genre), idx])
        c = Clip()
        COMPOSERS[genre](c, rng)
        off = k * GAP
        for ch in range(16):  # silence and reset every channel before the clip
            events.append((off, 0, bytes([0xB0 | ch, 120, 0])))
            events.append((off, 0, bytes([0xB0 | ch, 121, 0])))
        if 9 not in c.channels:
            events.append((off, 0, bytes([0xC9, 0])))  # standard kit unless changed
        events.extend((off + t, o, m) for t, o, m in c.events)
        post.append((float(rng.uniform(0.25, 0.95)), float(rng.uniform(25, 50)),
                     int(rng.integers(0, 2**31))))
    events.append((len(clips) * GAP, 0, bytes([0xB0, 123, 0])))
    mid, raw = work / f"{genre}-{clips[0]}.mid", work / f"{genre}-{clips[0]}.raw"
    write_midi(mid, events)
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.4", "-r", str(RATE), "-T", "raw",
                    "-o", "synth.polyphony=48",
                    "-O", "float", "-E", "little", "-F", str(raw), soundfont, str(mid)],
                   check=True, capture_output=True, timeout=1800)
    audio = np.fromfile(raw, "<f4").reshape(-1, 2).mean(axis=1)
    n = CLIP_SECONDS * RATE
    for k, idx in enumerate(clips):
        start = int(round(k * GAP * RATE))
        x = np.zeros(n, np.float64)
        piece = audio[start:start + n]
        x[:len(piece)] = piece
        peak, snr_db, noise_seed = post[k]
        x = x / max(np.abs(x).max(), 1e-9) * peak
        rms = np.sqrt(np.mean(x ** 2))
        noise = np.random.default_rng(noise_seed).normal(0, rms * 10 ** (-snr_db / 20), n)
        pcm = np.clip(np.round((x + noise) * 32767), -32768, 32767).astype("<i2")
        path = out_dir / genre / f"{genre}.{idx:05d}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.tobytes())


def generate(out_dir: Path, per_class: int, seed: int, genres: tuple[str, ...] = GENRES,
             chunk: int = 25, workers: int | None = None, soundfont: str = SOUNDFONT) -> None:
    """Write ``genres/<genre>/<genre>.000NN.wav`` clips (GTZAN's layout and format).

    Args:
        out_dir: Target directory; gets one folder per genre.
        per_class: Clips per genre.
        seed: Seed; each clip's arrangement depends only on (seed, genre, clip index).
        genres: Genres to write.
        chunk: Clips rendered by one fluidsynth process.
        workers: Parallel fluidsynth processes (default: CPU count).
        soundfont: The General MIDI soundfont.

    Raises:
        RuntimeError: fluidsynth or the soundfont is missing (``make data`` installs them).

    """
    if shutil.which("fluidsynth") is None or not Path(soundfont).is_file():
        raise RuntimeError("the GTZAN-style generator needs fluidsynth and the "
                           f"{soundfont} soundfont: apt-get install fluidsynth "
                           "fluid-soundfont-gm (make data does)")
    out_dir = Path(out_dir)
    jobs = []
    for genre in genres:
        (out_dir / genre).mkdir(parents=True, exist_ok=True)
        idx = list(range(per_class))
        jobs += [(genre, idx[i:i + chunk]) for i in range(0, per_class, chunk)]
    with tempfile.TemporaryDirectory(prefix="gtzan-render-") as work, ThreadPoolExecutor(
            workers or os.cpu_count() or 1) as pool:
        for f in [pool.submit(_render_chunk, g, clips, seed, out_dir, soundfont, Path(work))
                  for g, clips in jobs]:
            f.result()


# --------------------------------------------------------------------------- plots
def mfcc_picture(raw_files: Mapping[str, str], out_dir: Path) -> list[Path]:
    """The MFCC frames of the first decodable clip of each genre, as the features see them.

    Same TensorFlow function as the features: 5 s cut from each end, 15 cepstra per
    10 ms frame (cepstrum 0 = log energy), each frame standardised (the book's
    ``normalize``); the clip's features are the mean and covariance of these columns.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.data.media import MediaError
    from tasks.features.audio import mfcc, trim

    any_length = WavDecoder(sample_rate=RATE, channels=1)
    fig, axes = plt.subplots(len(GENRES), 1, figsize=(10, 2.2 * len(GENRES)))
    for ax, genre in zip(axes, GENRES, strict=True):
        ax.set_ylabel("cepstrum")
        for key in sorted(k for k in raw_files if k.startswith(f"{genre}/")):
            try:
                wave_ = any_length.decode(raw_files[key])
            except MediaError:
                continue
            if len(wave_) < BOOK.min_samples:
                continue
            cep = np.asarray(mfcc(trim(wave_[None, :].astype(np.float64), BOOK), BOOK))[0]
            cep = (cep - cep.mean(axis=1, keepdims=True)) / cep.std(axis=1, keepdims=True)
            seconds = cep.shape[0] * BOOK.frame_step / RATE
            im = ax.imshow(cep.T, aspect="auto", origin="lower", cmap="magma",
                           interpolation="nearest", vmin=-2.5, vmax=3.5,
                           extent=(BOOK.trim_seconds, BOOK.trim_seconds + seconds,
                                   -0.5, BOOK.numcep - 0.5))
            ax.set_title(f"{genre}: {key.split('/', 1)[1]}", fontsize=9)
            fig.colorbar(im, ax=ax, pad=0.01)
            break
        else:
            ax.set_title(f"{genre}: no decodable clip", fontsize=9)
    axes[-1].set_xlabel("time in the clip (s); 5 s cut from each end")
    fig.suptitle("MFCC per 10 ms frame, each frame standardised (cepstrum 0 = log energy)")
    fig.tight_layout()
    path = Path(out_dir) / "mfcc_per_genre.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


# --------------------------------------------------------------------------- the model
def build_model(params: Mapping[str, Any], stats: Mapping[str, Any]) -> Any:
    """The book's DNN: 135 MFCC statistics -> 25 ReLU -> 4 softmax, weight dropout, Adam."""
    import keras

    from tasks.features.layers import weight_dropout_dense_layer

    seed = int(params.get("seed", 42))
    init = keras.initializers.TruncatedNormal(stddev=0.1, seed=seed)
    bias = keras.initializers.Constant(0.1)
    inp = keras.Input(shape=(BOOK.width,), name="features")
    # The book drops the first layer's weights (W_1), not its activations.
    x = weight_dropout_dense_layer()(
        25, weight_dropout=float(params.get("dropout", 0.5)), seed=seed, activation="relu",
        kernel_initializer=init, bias_initializer=bias, name="hidden")(inp)
    out = keras.layers.Dense(len(GENRES), activation="softmax", kernel_initializer=init,
                             bias_initializer=bias, name="probabilities")(x)
    model = keras.Model(inp, out, name="gtzan_dnn")
    model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


DECODER = WavDecoder(sample_rate=RATE, channels=1, min_seconds=29.0, max_seconds=31.0,
                     sample_bits=(16,), features=feature_columns(BOOK),
                     feature_schema=feature_schema(BOOK))

SOURCE = MediaFolderSource(
    decoder=DECODER,
    classes=GENRES,
    default_location="synthetic:100:0",
    generator=generate,
    split_counts={"train": 70, "test": 30},  # the book: 70/30 of 100 clips per genre
    seed=0,
)

SPEC = UseCaseSpec(
    name="gtzan_genres",
    description=__doc__ or "",
    source=SOURCE,
    # The 135 MFCC statistics, unscaled as in the book (each frame is standardised
    # before the statistics, so they share one scale).
    preprocess=PreprocessSpec(features=tuple(Feature(n) for n in BOOK.names()),
                              label="label", max_bad_fraction=0.05, batch_size=64),
    split=SplitSpec(partition_to_split={"train": "train", "test": "test"},
                    validation_from="train", validation_size=0, stratify_by="label", seed=42,
                    shards={"train": 1, "validation": 1, "test": 1}),
    model=ModelSpec(build=build_model, input_key="features", label_key="label",
                    objective="classification", class_names=GENRES, serving_input=WavInput(BOOK),
                    extra_plots=mfcc_picture),
    gate=GateSpec(metric="test_accuracy", min_value=0.9305, max_regression=0.02),
    params={
        # The book takes 3000-8000 full-batch steps; here 300 epochs of mini-batches of 16
        # (5,300 steps): Keras and MLflow cost ~a tenth of a second per epoch, so 3000
        # one-step epochs would spend most of the time on bookkeeping.
        "epochs": RunParam(300, "integer", "Training epochs", minimum=1, maximum=20000),
        "batch_size": RunParam(16, "integer", "Mini-batch size (280 = the whole training "
                               "split, as the book)", minimum=1, maximum=4096),
        "learning_rate": RunParam(1e-4, "number", "Adam learning rate", minimum=1e-6,
                                  maximum=1.0),
        "dropout": RunParam(0.5, "number", "Dropout rate of the first layer's weights "
                            "(the book's keep_prob 0.5)", minimum=0.0, maximum=0.9),
    },
    # The tiny end-to-end run, made with more checks by its dedicated test.
    smoke=SmokeTest(None, {"epochs": 20},
                    covered_by="tests/e2e/test_gtzan.py"),
    tags=("audio", "classification", "books"),
)
