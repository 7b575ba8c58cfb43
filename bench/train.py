"""Training throughput: the machine's matmul ceiling, the books' models, and every lever.

Run:  .venv/bin/python bench/train.py [--only headline,levers,models] [--rounds 5]
      [--seconds 6] [--smoke]

Everything is measured side by side in one run, so the machine's load (other jobs) hits
every configuration alike: each configuration is one worker process (its own TensorFlow
with its own thread settings and environment), fitting the model with Keras exactly as
the train step does (``model.fit``), and the workers take turns: in each round every
worker trains for ``--seconds`` while the others wait (paused inside ``fit`` by a
callback). The first steps of each turn are not timed, so batches a pipeline prefetched
while its worker waited are not counted as free. Ratios are taken within a round, then
the median over rounds is printed.

Figures:
  * matmul ceiling: GFLOP/s of a 2048x2048 fp32 ``tf.matmul`` (2 FLOP per multiply-add);
  * per model: images/s and GFLOP/s (FLOP counted from the layer shapes: forward = 2 x
    multiply-adds of the convolutions and dense layers; training = 3 x forward, less the
    first layer's input gradient, which is not computed);
  * feed "pipeline" = the platform's input pipeline over TFRecords written with its own
    encoder (``tasks.data.tfrecord``: parse, decode, cache, shuffle, batch, prefetch),
    feed "memory" = the same arrays fitted from memory (``model.fit(x, y)``);
  * "today" = what the train step does (batch 128, TensorFlow's default threads); each
    lever changes one thing against it (``--only levers``).

``--smoke`` runs each part on tiny data with turns of a fraction of a second, and only the
configurations of ``SMOKE`` (each worker's code path once): ``make test`` does, so the
script cannot rot. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, load, median, table  # noqa: E402

from tasks.core.hardware import native_bf16  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Config:
    """One training configuration (a worker process)."""

    name: str
    model: str = "cnn"  # cnn | dnn (mnist variants) | cifar10 | matmul
    feed: str = "pipeline"  # pipeline | memory
    batch: int = 128
    lr_scale: float = 1.0  # learning rate = the model's default x this (batch scaling)
    intra: int = 0  # tf intra-op threads (0: TensorFlow's default)
    inter: int = 0  # tf inter-op threads
    env: dict[str, str] = field(default_factory=dict)  # set before TensorFlow loads
    spe: int = 1  # steps_per_execution
    layout: str = "channels_last"
    jit: bool = False
    cache: str = "platform"  # platform | float32 | uint8 | none (pipeline feed only)
    policy: str = "float32"  # Keras dtype policy (mixed_bfloat16: bf16 compute, fp32 weights)
    dtype: str = "float32"  # the matmul ceiling's dtype


TODAY = Config("today")
# precision=mixed_bfloat16 (make run's precision=auto on a CPU with bf16 instructions).
BF16 = replace(TODAY, name="bf16", policy="mixed_bfloat16")


# ---------------------------------------------------------------------------------- worker

def _leaf_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.extend(_leaf_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


def train_flops(model: Any) -> tuple[float, float]:
    """(forward, training) FLOP per example, from the conv and dense layers' shapes."""
    import keras

    fwd, first = [], True
    train = 0.0
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense):
            kernel = layer.kernel.shape
            positions = 1
            for d in layer.output.shape[1:-1] if layer.__class__.__name__ == "Dense" else (
                    layer.output.shape[1:3] if layer.data_format == "channels_last"
                    else layer.output.shape[2:4]):
                positions *= int(d)
            macs = positions
            for d in kernel:
                macs *= int(d)
            flop = 2.0 * macs
            fwd.append(flop)
            # forward + weight gradient + input gradient (none for the first layer)
            train += flop * (2 if first else 3)
            first = False
    return sum(fwd), train


def _write_dataset(out: Path, x: Any, y: Any, shards: int) -> None:
    """TFRecords in the platform's layout, written with its encoder."""
    import numpy as np

    from tasks.core.files import write_json
    from tasks.core.run import DATASET_MANIFEST, FEATURE_SPEC, STATS
    from tasks.data.tfrecord import encode_examples, shard_name

    spec = {"image": {"dtype": "uint8", "shape": list(x.shape[1:]), "encoding": "raw"},
            "label": {"dtype": "int64", "shape": [], "encoding": "int64", "num_classes": 10}}
    (out / "train").mkdir(parents=True, exist_ok=True)
    import tensorflow as tf

    n = len(x)
    for s in range(shards):
        lo, hi = s * n // shards, (s + 1) * n // shards
        with tf.io.TFRecordWriter(str(out / shard_name("train", s, shards))) as w:
            for rec in encode_examples(spec, {"image": x[lo:hi], "label": y[lo:hi]}):
                w.write(rec)
    write_json(out / FEATURE_SPEC, spec)
    stats = {"train": {"rows": n, "features": {"image": {"min": 0.0, "max": 255.0}},
                       "class_counts": {str(k): int(v) for k, v in
                                        zip(*np.unique(y, return_counts=True), strict=True)}}}
    write_json(out / STATS, stats)
    write_json(out / DATASET_MANIFEST, {"splits": {"train": {"rows": n}}})


def _model(cfg: Config, stats: dict[str, Any]) -> Any:
    """The use case's own builder (models/), with the configuration's compile options."""
    from tasks.spec import catalog

    if cfg.model == "cifar10":
        spec, params = catalog.get("cifar10"), {"augment": True, "learning_rate": 1e-3}
    else:
        spec = catalog.get("mnist")
        params = {"variant": cfg.model, "learning_rate": 1e-3}
    params["learning_rate"] *= cfg.lr_scale
    params["precision"] = cfg.policy
    if cfg.layout == "channels_first":
        model = _cnn_channels_first(params)
    else:  # the policy travels as the run param, as in the train step
        model = spec.model.build(params, stats)
    model.steps_per_execution = cfg.spe
    model.jit_compile = cfg.jit
    return model, spec


def _cnn_channels_first(params: dict[str, Any]) -> Any:
    """models/mnist.py's CNN with NCHW tensors (same layers, same arithmetic)."""
    import keras

    L = keras.layers
    inp = keras.Input(shape=(28, 28), dtype="float32", name="pixels")
    x = L.Rescaling(1.0 / 255, name="normalise")(inp)
    x = L.Reshape((1, 28, 28))(x)
    x = L.Conv2D(32, 5, padding="same", activation="relu", data_format="channels_first")(x)
    x = L.MaxPooling2D(2, data_format="channels_first")(x)
    x = L.Conv2D(64, 5, padding="same", activation="relu", data_format="channels_first")(x)
    x = L.MaxPooling2D(2, data_format="channels_first")(x)
    x = L.Flatten(data_format="channels_first")(x)
    x = L.Dense(1024, activation="relu")(x)
    x = L.Dropout(0.5)(x)
    out = L.Dense(10, activation="softmax", name="probabilities")(x)
    model = keras.Model(inp, out, name="mnist_cnn_nchw")
    model.compile(optimizer=keras.optimizers.Adam(float(params["learning_rate"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _dataset(cfg: Config, reader: Any, spec: Any) -> Any:
    """The training split as the train step feeds it (or a variant of the cache)."""
    import tensorflow as tf

    from tasks import objectives
    from tasks.data.tfrecord import split_files

    if cfg.cache == "platform":
        return objectives.get(spec.model.objective).dataset(reader, spec.model, "train",
                                                            cfg.batch, 42)
    fs = reader.feature_spec["image"]
    desc = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}

    def decode(records: Any) -> Any:
        ex = tf.io.parse_example(records, desc)
        x = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), [-1, *fs["shape"]])
        return (x if cfg.cache == "uint8" else tf.cast(x, tf.float32)), ex["label"]

    ds = tf.data.TFRecordDataset(split_files(reader.dataset_dir, "train")).batch(4096)
    ds = ds.map(decode)
    if cfg.cache != "none":
        ds = ds.cache()
    ds = ds.unbatch().shuffle(20_000, seed=42, reshuffle_each_iteration=True).batch(cfg.batch)
    if cfg.cache == "uint8":
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.prefetch(tf.data.AUTOTUNE)


_results: Any = None  # a worker's answers go to their own pipe (TensorFlow may use stdout)


def _say(**kw: Any) -> None:
    _results.write(json.dumps(kw) + "\n")
    _results.flush()


def _command() -> tuple[str, float]:
    line = sys.stdin.readline().split()
    if not line:
        return "stop", 0.0
    return line[0], float(line[1]) if len(line) > 1 else 0.0


def worker(cfg: Config, data_dir: Path, skip: int) -> None:
    """One configuration: train in turns of a few seconds, report each turn."""
    for k, v in cfg.env.items():
        os.environ[k] = v
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if cfg.intra:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.intra)
    if cfg.inter:
        tf.config.threading.set_inter_op_parallelism_threads(cfg.inter)
    if cfg.model == "matmul":
        return _matmul_worker(dtype=cfg.dtype)
    import keras

    from tasks.data.tfrecord import DatasetReader

    reader = DatasetReader.open(data_dir / ("cifar10" if cfg.model == "cifar10" else "mnist"))
    keras.utils.set_random_seed(42)
    model, spec = _model(cfg, reader.stats)
    fwd, train = train_flops(model)

    class Turns(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.left = skip
            self.seconds = 0.0
            self.t0 = self.c0 = 0.0
            self.images = 0
            self.begin = 0

        def on_train_begin(self, logs: Any = None) -> None:
            _say(ready=True, forward_flop=fwd, train_flop=train)
            self._next()

        def _next(self) -> None:
            cmd, arg = _command()
            if cmd == "stop":
                self.model.stop_training = True
                return
            self.seconds, self.left = arg, skip

        def on_train_batch_begin(self, step: int, logs: Any = None) -> None:
            self.begin = step

        def on_train_batch_end(self, step: int, logs: Any = None) -> None:
            if self.model.stop_training:
                return
            if self.left > 0:
                self.left -= step - self.begin + 1
                if self.left <= 0:
                    self.t0, self.c0, self.images = time.perf_counter(), time.process_time(), 0
                return
            self.images += (step - self.begin + 1) * cfg.batch
            wall = time.perf_counter() - self.t0
            if wall >= self.seconds:
                _say(images=self.images, wall=wall, cpu=time.process_time() - self.c0)
                self._next()

    turns = Turns()
    if cfg.feed == "memory":
        cols = reader.arrays("train", ["image", "label"])
        model.fit(cols["image"].astype("float32"), cols["label"], batch_size=cfg.batch,
                  epochs=1_000_000, shuffle=True, verbose=0, callbacks=[turns])
    else:
        model.fit(_dataset(cfg, reader, spec), epochs=1_000_000, verbose=0, callbacks=[turns])


def _matmul_worker(n: int = 2048, dtype: str = "float32") -> None:
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n), seed=1), dtype)
    b = tf.cast(tf.random.normal((n, n), seed=2), dtype)
    mm = tf.function(tf.linalg.matmul)
    mm(a, b).numpy()
    _say(ready=True, forward_flop=2.0 * n ** 3, train_flop=2.0 * n ** 3)
    while True:
        cmd, seconds = _command()
        if cmd == "stop":
            return
        mm(a, b).numpy()  # not timed: as the models' skipped steps
        t0, c0, done = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - t0 < seconds:
            mm(a, b).numpy()
            done += 1
        _say(images=done, wall=time.perf_counter() - t0, cpu=time.process_time() - c0)


# ---------------------------------------------------------------------------------- parent

class Worker:
    """A configuration's process, driven turn by turn."""

    def __init__(self, cfg: Config, data_dir: Path, skip: int) -> None:
        self.cfg = cfg
        read_end, write_end = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(asdict(cfg)),
             "--data", str(data_dir), "--skip", str(skip), "--results-fd", str(write_end)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            text=True, cwd=ROOT, pass_fds=(write_end,))
        os.close(write_end)
        self.results = os.fdopen(read_end, "r")
        self.info: dict[str, Any] = {}
        self.turns: list[dict[str, float]] = []

    def read(self, timeout: float = 300) -> dict[str, Any]:
        import select

        if not select.select([self.results], [], [], timeout)[0]:
            self.proc.kill()
            raise RuntimeError(f"worker {self.cfg.name} did not answer in {timeout:.0f} s")
        line = self.results.readline()
        if line:
            return json.loads(line)
        raise RuntimeError(f"worker {self.cfg.name} ended (exit {self.proc.wait()}); "
                           "run it alone to see why")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def turn(self, seconds: float, keep: bool = True) -> dict[str, float]:
        self.send(f"go {seconds}")
        out = self.read()
        out["rate"] = out["images"] / out["wall"]
        out["cpu_rate"] = out["images"] / max(out["cpu"], 1e-9)
        if keep:
            self.turns.append(out)
        return out

    def close(self) -> None:
        try:
            self.send("stop")
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --smoke runs these configurations only: each code path of a worker (the matmul, the
# in-memory feed, the platform's pipeline, the other caches, NCHW, the CIFAR-10 model)
# once, in as few TensorFlow processes as that takes
SMOKE = {"ceiling", "today-mem", "today", "bf16", "cache-u8", "nchw", "cifar10-today"}


def measure(configs: list[Config], data_dir: Path, a: argparse.Namespace,
            part: str = "") -> dict[str, Worker]:
    """Round-robin turns of every configuration (start-up and warm-up are not timed).

    A worker that fails or stops answering is reported and left out; the others go on.
    """
    if a.smoke:  # the headline's "today" is the levers' one
        configs = [c for c in configs if c.name in SMOKE
                   and not (part == "headline" and c.name == "today")]
    workers: dict[str, Worker] = {}

    def attempt(w: Worker, what: str, fn: Any) -> bool:
        try:
            fn()
            return True
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"    {w.cfg.name}: {what} failed, left out ({exc})", flush=True)
            w.proc.kill()
            workers.pop(w.cfg.name, None)
            return False

    try:
        for cfg in configs:  # all start at once: the TensorFlow imports overlap
            workers[cfg.name] = Worker(cfg, data_dir, a.skip)
        for w in list(workers.values()):
            attempt(w, "start", lambda w=w: setattr(w, "info", w.read()))
        for w in list(workers.values()):
            attempt(w, "warm-up", lambda w=w: w.turn(a.seconds, keep=False))
        for r in range(a.rounds):
            for w in list(workers.values()):
                attempt(w, f"round {r + 1}", lambda w=w: w.turn(a.seconds))
            print(f"    round {r + 1}/{a.rounds} done ({load()})", flush=True)
    finally:
        for w in workers.values():
            w.close()
    return workers


def ratio(a: Worker | None, b: Worker | None) -> float:
    """Median over rounds of a's rate / b's rate (same round: same load); NaN if absent."""
    if a is None or b is None:
        return float("nan")
    return median([x["rate"] / y["rate"] for x, y in zip(a.turns, b.turns, strict=True)])


def ratio_to(x: Worker | None, ceiling: Worker | None) -> float:
    """x's GFLOP/s over the ceiling's, per round, median."""
    if x is None or ceiling is None:
        return float("nan")
    return median([(t["rate"] * x.info["train_flop"]) / (c["rate"] * ceiling.info["train_flop"])
                   for t, c in zip(x.turns, ceiling.turns, strict=True)])


def rate(w: Worker) -> float:
    return median([t["rate"] for t in w.turns])


def gflops(w: Worker) -> float:
    return rate(w) * w.info["train_flop"] / 1e9


def describe(cfg: Config) -> str:
    if cfg.model == "matmul":
        return f"2048x2048 {cfg.dtype} tf.matmul, default threads"
    parts = [f"{cfg.model}", cfg.feed, f"batch {cfg.batch}"]
    if cfg.lr_scale != 1:
        parts.append(f"lr x{cfg.lr_scale:g}")
    if cfg.intra or cfg.inter:
        parts.append(f"threads intra {cfg.intra or 'default'} inter {cfg.inter or 'default'}")
    parts += [f"{k}={v}" for k, v in cfg.env.items()]
    if cfg.spe != 1:
        parts.append(f"steps_per_execution {cfg.spe}")
    if cfg.layout != "channels_last":
        parts.append(cfg.layout)
    if cfg.jit:
        parts.append("jit_compile (XLA)")
    if cfg.policy != "float32":
        parts.append(f"policy {cfg.policy}")
    if cfg.cache != "platform":
        parts.append(f"cache {cfg.cache}")
    return ", ".join(parts)


def model_table(w: dict[str, Worker], base: str, ceiling: Worker | None) -> str:
    rows = [[name, describe(x.cfg), rate(x), gflops(x), ratio_to(x, ceiling), ratio(x, w.get(base))]
            for name, x in w.items() if x.cfg.model != "matmul"]
    return table(["config", "what", "images/s", "GFLOP/s", "of ceiling", f"vs {base}"], rows)


def headline(data_dir: Path, a: argparse.Namespace) -> None:
    configs = [Config("ceiling", model="matmul"), TODAY,
               replace(TODAY, name="today-mem", feed="memory")]
    if native_bf16():  # bf16 compute only where the CPU has bf16 instructions
        configs += [Config("ceiling-bf16", model="matmul", dtype="bfloat16"), BF16]
    w = measure(configs, data_dir, a, "headline")
    ceil = w.get("ceiling")
    if ceil is not None:
        print(f"\n  matmul ceiling: {gflops(ceil):.1f} GFLOP/s (2048² fp32, median of "
              f"{len(ceil.turns)} turns)")
    cnn = next((x for x in w.values() if x.cfg.model == "cnn"), None)
    if cnn is None:
        print("  no CNN worker answered")
        return
    print(f"  the books' CNN: {cnn.info['forward_flop'] / 1e6:.1f} MFLOP forward, "
          f"{cnn.info['train_flop'] / 1e6:.1f} MFLOP per training image\n")
    print(model_table(w, "today", ceil))
    print(f"\n  pipeline / in-memory: {ratio(w.get('today'), w.get('today-mem')):.3f}x "
          "(target >= 0.95)")
    print(f"  the CNN through the pipeline at {ratio_to(w.get('today'), ceil):.0%} of the "
          "matmul ceiling (target >= 70%)")
    if (bf16 := w.get("bf16")) is not None:
        ceil16 = w.get("ceiling-bf16")
        print(f"  precision=mixed_bfloat16 (bf16 compute, fp32 weights): "
              f"{ratio(bf16, w.get('today')):.2f}x today's images/s (target >= 1.5x), "
              f"{ratio_to(bf16, ceil):.0%} of the fp32 matmul ceiling, "
              f"{ratio_to(bf16, ceil16):.0%} of the bf16 one "
              f"({gflops(ceil16) if ceil16 else float('nan'):.1f} GFLOP/s)")
    else:
        print("  no bf16 instructions on this CPU: precision=auto trains in float32")


LEVERS = [
    ("batch 256, lr x2", replace(TODAY, name="b256", batch=256, lr_scale=2.0)),
    ("batch 512, lr x4", replace(TODAY, name="b512", batch=512, lr_scale=4.0)),
    ("threads intra 2 / inter 1", replace(TODAY, name="t2-1", intra=2, inter=1)),
    ("threads intra 1 / inter 1", replace(TODAY, name="t1-1", intra=1, inter=1)),
    ("threads intra 2 / inter 2", replace(TODAY, name="t2-2", intra=2, inter=2)),
    ("oneDNN off", replace(TODAY, name="onednn-off", env={"TF_ENABLE_ONEDNN_OPTS": "0"})),
    ("steps_per_execution 16", replace(TODAY, name="spe16", spe=16)),
    # The train step's default since the tiny run's fit (tasks.steps.train).
    ("steps_per_execution 32", replace(TODAY, name="spe32", spe=32)),
    ("cache uint8, cast per batch", replace(TODAY, name="cache-u8", cache="uint8")),
    ("no cache (decode every epoch)", replace(TODAY, name="no-cache", cache="none")),
    ("channels_first (NCHW)", replace(TODAY, name="nchw", layout="channels_first")),
    ("jit_compile (XLA)", replace(TODAY, name="xla", jit=True)),
    # Changes what the model computes (bf16 activations, fp32 weights): said in the table.
    ("mixed_bfloat16 (bf16 compute)", BF16),
    ("oneDNN fp32 math in bf16", replace(TODAY, name="fpmath-bf16",
                                         env={"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"})),
]


def levers(data_dir: Path, a: argparse.Namespace, names: list[str] | None) -> None:
    chosen = [lv for lv in LEVERS if names is None or lv[1].name in names]
    w = measure([TODAY] + [c for _, c in chosen], data_dir, a)
    rows = []
    for label, cfg in [("today", TODAY), *chosen]:
        if (x := w.get(cfg.name)) is not None:
            rows.append([label, describe(cfg), rate(x), ratio(x, w.get("today")),
                         median([t["cpu_rate"] for t in x.turns])])
    print()
    print(table(["lever", "configuration", "images/s", "vs today", "images/CPU-s"], rows))


def other_models(data_dir: Path, a: argparse.Namespace) -> None:
    for model in ("dnn", "cifar10"):
        configs = [replace(TODAY, name=f"{model}-today", model=model),
                   replace(TODAY, name=f"{model}-today-mem", model=model, feed="memory"),
                   replace(TODAY, name=f"{model}-spe32", model=model, spe=32)]
        if native_bf16():
            configs.append(replace(BF16, name=f"{model}-bf16", model=model))
        if a.smoke and not any(c.name in SMOKE for c in configs):
            continue
        w = measure(configs, data_dir, a)
        if not w:
            print(f"\n  {model}: no worker answered")
            continue
        x = next(iter(w.values()))
        print(f"\n  {model}: {x.info['train_flop'] / 1e6:.2f} MFLOP per training image")
        print(model_table(w, f"{model}-today", None))
        print(f"  pipeline / in-memory: "
              f"{ratio(w.get(f'{model}-today'), w.get(f'{model}-today-mem')):.3f}x")


def prepare(work: Path, smoke: bool) -> Path:
    """Fashion-MNIST's training images (or tiny stand-ins) and CIFAR-shaped images."""
    import numpy as np

    from tasks.data.idx import read_idx

    rng = np.random.default_rng(0)
    train_images = FASHION / "train-images-idx3-ubyte.gz"
    if smoke or not train_images.is_file():
        if not smoke:
            print(f"  {train_images} missing (make data): random images instead")
        n = 512 if smoke else 55_000
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n)
    else:  # the 55,000 training images of the run's split (the first ones)
        x = read_idx(train_images)[:55_000]
        y = read_idx(FASHION / "train-labels-idx1-ubyte.gz")[:55_000].astype(np.int64)
    _write_dataset(work / "mnist", x, y, shards=4)
    n = 256 if smoke else 5_000  # cifar10's generated set: 4,500 training images
    _write_dataset(work / "cifar10", rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                   rng.integers(0, 10, n), shards=1)
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="headline,levers,models",
                        help="comma-separated parts: headline, levers, models")
    parser.add_argument("--levers", help="comma-separated lever names (default: all): "
                        + ", ".join(c.name for _, c in LEVERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of one turn")
    parser.add_argument("--skip", type=int, default=12,
                        help="steps of each turn not timed (prefetched while waiting)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, short turns")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--results-fd", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker:
        global _results
        _results = os.fdopen(a.results_fd, "w", buffering=1)
        cfg = json.loads(a.worker)
        return worker(Config(**cfg), Path(a.data), a.skip)
    if a.smoke:
        a.rounds, a.seconds, a.skip = 1, 0.3, 1
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parts = a.only.split(",")
    print(f"bench/train.py: {load()}")
    with tempfile.TemporaryDirectory(prefix="mlp-bench-train-") as tmp:
        data_dir = prepare(Path(tmp), a.smoke)
        if "headline" in parts:
            print("\n== the books' CNN on Fashion-MNIST: the matmul ceiling, pipeline vs in-memory")
            headline(data_dir, a)
        if "levers" in parts:
            print("\n== levers, one at a time against today's configuration (CNN, pipeline)")
            levers(data_dir, a, a.levers.split(",") if a.levers else None)
        if "models" in parts:
            print("\n== the DNN and the CIFAR-10 CNN")
            other_models(data_dir, a)
    print(f"\nbench/train.py done: {load()}")


if __name__ == "__main__":
    main()
