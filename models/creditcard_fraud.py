"""Credit-card fraud detection (Kaggle ``creditcard.csv`` schema).

Columns: ``Time`` (seconds from the first transaction), ``V1``..``V28`` (PCA components),
``Amount``, ``Class`` (1 = fraud, ~0.172%). The real file (284,807 rows, 492 frauds) is
not available offline, so the default source is a seeded synthetic generator with the
same columns and imbalance; point ``source_dir`` at a directory holding the real
``creditcard.csv`` to use it.

Preprocessing follows the books: min-max scaling of V1..V28 with training statistics;
normal rows split 60/20/20 and fraud rows 0/50/50 (a fraud row never reaches training:
the autoencoder learns normal behaviour only), then one global seeded shuffle so test
files do not end with all fraud rows. The autoencoder model lands with the use-case issue;
until then the DAG stops after preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.sources import Column, TabularSource
from tasks.spec import RATIO, Feature, PreprocessSpec, SplitSpec, UseCaseSpec

V_COLUMNS = tuple(f"V{i}" for i in range(1, 29))
FRAUD_RATE = 492 / 284_807


def generate(out_dir: Path, rows: int, seed: int) -> None:
    """Write a synthetic ``creditcard.csv`` with Kaggle's columns and fraud rate.

    Generative model: normal rows have V_i ~ N(0, s_i) with s_i falling from 2.0 to 0.3
    (PCA components ordered by variance); fraud rows shift the means of the components
    that separate fraud in the real data (V14, V12, V10, V17, V16, V3, V7 negative; V4,
    V11, V2 positive) and widen the spread by 1.5x. Amount is log-normal (fraud: larger
    spread), Time is uniform over two days and sorted. Exactly
    ``round(rows * 0.001727)`` rows are fraud.

    Args:
        out_dir: Directory to write ``creditcard.csv`` into.
        rows: Number of rows.
        seed: Random seed; the same (rows, seed) gives byte-identical files.
    """
    import pyarrow as pa
    from pyarrow import csv

    rng = np.random.default_rng(seed)
    n_fraud = max(1, round(rows * FRAUD_RATE))
    is_fraud = np.zeros(rows, bool)
    is_fraud[rng.choice(rows, n_fraud, replace=False)] = True
    scale = np.linspace(2.0, 0.3, 28)
    shift = np.zeros(28)
    for name, mu in {"V14": -6.0, "V12": -5.0, "V10": -4.5, "V17": -5.0, "V16": -3.5,
                     "V3": -4.0, "V7": -3.5, "V4": 3.5, "V11": 3.0, "V2": 2.5}.items():
        shift[int(name[1:]) - 1] = mu
    v = rng.normal(0.0, 1.0, (rows, 28)) * scale
    v[is_fraud] = v[is_fraud] * 1.5 + shift
    amount = np.where(is_fraud, rng.lognormal(3.5, 1.8, rows), rng.lognormal(3.0, 1.3, rows))
    table = {"Time": np.sort(rng.uniform(0, 172_792, rows)).round(0)}
    table.update({c: v[:, i].round(6) for i, c in enumerate(V_COLUMNS)})
    table["Amount"] = amount.round(2)
    table["Class"] = is_fraud.astype(np.int64)
    csv.write_csv(pa.table(table), str(Path(out_dir) / "creditcard.csv"),
                  csv.WriteOptions(quoting_style="none"))


SOURCE = TabularSource(
    columns=(
        Column("Time", min=0.0),
        *(Column(c) for c in V_COLUMNS),
        Column("Amount", min=0.0),
        Column("Class", dtype="int64", values=(0, 1)),
    ),
    layout={"all": "creditcard.csv"},
    # Kaggle's size and fraud rate, generated with seed 0 (no real data offline).
    default_location="synthetic:284807:0",
    generator=generate,
)

SPEC = UseCaseSpec(
    name="creditcard_fraud",
    description=__doc__ or "",
    source=SOURCE,
    preprocess=PreprocessSpec(
        features=tuple(Feature(c, "minmax") for c in V_COLUMNS),
        label="Class",
        label_dtype="int64",
        batch_size=8192,
    ),
    split=SplitSpec(
        stratify_by="Class",
        partition_to_split={"all": RATIO},
        ratios={"train": 0.6, "validation": 0.2, "test": 0.2},
        class_ratios={1: {"train": 0.0, "validation": 0.5, "test": 0.5}},
        seed=42,
        shards={"train": 4, "validation": 1, "test": 1},
    ),
    model=None,
    gate=None,
    params={},
    tags=("tabular", "anomaly-detection", "books"),
)
