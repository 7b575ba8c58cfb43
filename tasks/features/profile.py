"""Distribution profiles: histograms of data columns and of model outputs on fixed bins.

What drift and training/serving skew checks compare (:mod:`tasks.features.drift`), and
what the per-run data-analysis page draws. Profiles are built in two full passes over
column batches, both mergeable (Beam combines them across workers):

1. :class:`BinSketch` on the training split: the bins of every profiled column, i.e. the
   deciles of numeric values (10 equal-frequency bins with open ends), the most frequent
   categories (top :data:`TOP_CATEGORIES`, the rest as ``<other>``), fixed 16-level bins
   of pixel intensities;
2. :class:`Histogram` on any data: counts on those bins (plus missing values).

A histogram is a JSON-able dict ``{"kind", "edges" | "values", "counts", "missing",
"rows"}``; counting new data on the *champion's* bins makes it comparable with the
champion's training histogram bin for bin.

Profiled columns come from the preprocessing spec (:func:`data_columns`): each numeric or
categorical input column as it is; an image as three columns: ``<name>.mean`` and
``<name>.std`` per image (brightness and contrast, the statistics its preprocessing
scales with) and ``<name>.pixels`` (the intensity histogram); a text column as
``<name>.length`` (characters per line). A model's answers are profiled by
:func:`output_columns`: the predicted class of a probability output, a score, a flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.features.transforms import CATEGORICAL as CATEGORICAL_TRANSFORMS
from tasks.features.transforms import _quantile, sketch_merge, sketch_of, sketch_push
from tasks.spec import PreprocessSpec

NUMERIC = "numeric"
CATEGORICAL = "categorical"
INTENSITY = "intensity"
QUANTILES = tuple(float(q) for q in np.arange(1, 10) / 10)  # decile edges: 10 bins
TOP_CATEGORIES = 20
OTHER = "<other>"
INTENSITY_EDGES = tuple(range(0, 257, 16))  # 16 bins of pixel values 0-255


@dataclass(frozen=True)
class ProfileColumn:
    """One profiled column: its name in reports, its kind, and how it is computed.

    Attributes:
        name: Name in reports and thresholds (``V3``, ``image.mean``).
        kind: ``numeric``, ``categorical`` or ``intensity``.
        source: The data column it is computed from.
        derive: ``value`` (the column itself), ``mean`` / ``std`` (per image), ``pixels``
            (every pixel value) or ``length`` (characters of a text).

    """

    name: str
    kind: str
    source: str
    derive: str = "value"

    def values(self, cols: Mapping[str, Any]) -> np.ndarray:
        """The 1-D values of this column in a batch (numbers, or strings for categories)."""
        v = cols[self.source]
        if self.derive == "value":
            if self.kind == CATEGORICAL:
                return category_strings(v)
            return np.asarray(v, np.float64).reshape(len(v), -1)[:, 0]
        if self.derive == "length":
            return np.asarray([len(x) for x in np.asarray(v, object).ravel()], np.float64)
        x = np.asarray(v)
        if self.derive == "pixels":
            return x.reshape(-1)
        flat = x.reshape(len(x), -1).astype(np.float64)
        return flat.mean(axis=1) if self.derive == "mean" else flat.std(axis=1)


def category_counts(v: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distinct categories (as :func:`category_strings`) and their counts.

    Counted on the raw values first, so only the distinct ones become strings.
    """
    arr = np.asarray(v).ravel()
    if arr.dtype == object:
        arr = category_strings(arr)
    vals, counts = np.unique(arr, return_counts=True)
    return category_strings(vals), counts


def category_strings(v: Any) -> np.ndarray:
    """Category values as strings, alike whatever their source: ``1``, ``1.0`` -> ``"1"``."""
    arr = np.asarray(v)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64).astype(str).astype(object).ravel()
    if arr.dtype.kind == "f":
        flat = arr.ravel()
        whole = np.isfinite(flat) & (flat == np.round(flat))
        out = flat.astype(str).astype(object)
        out[whole] = flat[whole].astype(np.int64).astype(str)
        return out
    return np.asarray([x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                       for x in arr.ravel()], object)


def data_columns(prep: PreprocessSpec, schema: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[ProfileColumn, ...]:
    """The profiled columns of a use case's inputs (see the module docstring)."""
    out: list[ProfileColumn] = []
    for f in prep.features:
        if f.transform == "detection":  # encoded images with boxes: no column profile
            continue
        if f.is_raw:
            out += [ProfileColumn(f"{f.name}.mean", NUMERIC, f.name, "mean"),
                    ProfileColumn(f"{f.name}.std", NUMERIC, f.name, "std"),
                    ProfileColumn(f"{f.name}.pixels", INTENSITY, f.name, "pixels")]
        elif f.transform == "tokens":
            out.append(ProfileColumn(f"{f.name}.length", NUMERIC, f.name, "length"))
        elif (f.transform in CATEGORICAL_TRANSFORMS
              or schema.get(f.name, {}).get("dtype") == "string"):
            out.append(ProfileColumn(f.name, CATEGORICAL, f.name))
        else:
            out.append(ProfileColumn(f.name, NUMERIC, f.name))
    return tuple(out)


# --------------------------------------------------------------------------- bins
class BinSketch:
    """Pass 1 (training split): mergeable sketches that finish as every column's bins."""

    def __init__(self, columns: Sequence[ProfileColumn]) -> None:
        self.columns = tuple(columns)

    def create(self) -> dict[str, Any]:
        """Empty accumulator (a plain dict: Beam pickles it between workers)."""
        return {}

    def add(self, acc: dict[str, Any], cols: Mapping[str, Any]) -> dict[str, Any]:
        """Fold a column batch into the sketches."""
        for c in self.columns:
            if c.kind == INTENSITY:
                acc.setdefault(c.name, {})
                continue
            if c.kind == CATEGORICAL:
                counts = acc.setdefault(c.name, {"counts": {}})["counts"]
                for val, n in zip(*category_counts(cols[c.source]), strict=True):
                    counts[str(val)] = counts.get(str(val), 0) + int(n)
                continue
            v = c.values(cols)
            v = v[np.isfinite(v)]
            sketch_push(acc.setdefault(c.name, {"sketch": (np.empty(0), np.empty(0))}), v)
        return acc

    def merge(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Merge accumulators (associative and commutative)."""
        out: dict[str, Any] = {}
        for acc in accs:
            for name, a in acc.items():
                if "sketch" in a:
                    sketch_of(a)  # the buffered values into the sketch: entries share nothing
                b = out.get(name)
                if b is None:
                    out[name] = {k: (dict(v) if isinstance(v, dict) else v)
                                 for k, v in a.items()}
                elif "counts" in a:
                    for val, n in a["counts"].items():
                        b["counts"][val] = b["counts"].get(val, 0) + n
                elif "sketch" in a:
                    sketch_merge(b, a)
        return out

    def finish(self, acc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Bins per column: ``{"kind", "edges"}`` or ``{"kind", "values"}``."""
        bins: dict[str, dict[str, Any]] = {}
        for c in self.columns:
            a = acc.get(c.name)
            if c.kind == INTENSITY:
                bins[c.name] = {"kind": INTENSITY, "edges": list(INTENSITY_EDGES)}
            elif c.kind == CATEGORICAL:
                counts = (a or {}).get("counts", {})
                top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]
                # Shown in a stable, readable order: numbers (class indices) by value.
                values = sorted((k for k, _ in top), key=lambda v: (
                    not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
                bins[c.name] = {"kind": CATEGORICAL, "values": values + [OTHER]}
            else:
                sketch = sketch_of(a) if a else None
                bins[c.name] = {"kind": NUMERIC, "edges": numeric_edges(sketch)
                                if sketch is not None and len(sketch[0]) else []}
        return bins


def numeric_edges(sketch: tuple[np.ndarray, np.ndarray]) -> list[float]:
    """Distinct decile edges of a weighted sample (fewer bins for discrete values)."""
    qs = [_quantile(sketch[0], sketch[1], q) for q in QUANTILES]
    return sorted({float(q) for q in qs})


def bins_of(histograms: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The bins of a set of histograms (to count other data on them)."""
    return {name: {k: h[k] for k in ("kind", "edges", "values") if k in h}
            for name, h in histograms.items()}


# --------------------------------------------------------------------------- counts
class Histogram:
    """Pass 2 (any data): mergeable counts of every column on given bins."""

    def __init__(self, columns: Sequence[ProfileColumn], bins: Mapping[str, Mapping[str, Any]]
                 ) -> None:
        self.columns = tuple(c for c in columns if c.name in bins)
        self.bins = {k: dict(v) for k, v in bins.items()}
        self._index = {name: {v: i for i, v in enumerate(b.get("values", ()))}
                       for name, b in self.bins.items()}

    def size(self, name: str) -> int:
        """Number of bins of a column."""
        b = self.bins[name]
        if b["kind"] == CATEGORICAL:
            return len(b["values"])
        if b["kind"] == INTENSITY:
            return len(b["edges"]) - 1
        return len(b["edges"]) + 1

    def create(self) -> dict[str, Any]:
        """Empty accumulator: per column ``[counts, missing, rows]``."""
        return {c.name: [np.zeros(self.size(c.name), np.int64), 0, 0] for c in self.columns}

    def add(self, acc: dict[str, Any], cols: Mapping[str, Any]) -> dict[str, Any]:
        """Count a column batch."""
        for c in self.columns:
            if c.source in cols:
                acc[c.name] = self._count(c, acc[c.name], cols)
        return acc

    def _count(self, c: ProfileColumn, entry: list, cols: Mapping[str, Any]) -> list:
        counts, missing, rows = entry
        b = self.bins[c.name]
        if c.kind == CATEGORICAL:
            other = len(b["values"]) - 1
            vals, per = category_counts(cols[c.source])
            idx = np.fromiter((self._index[c.name].get(x, other) for x in vals.tolist()),
                              np.int64, len(vals))
            counts = counts + np.bincount(idx, weights=per, minlength=len(counts)
                                          ).astype(np.int64)
            return [counts, missing, rows + int(per.sum())]
        v = c.values(cols)
        if c.kind == INTENSITY:
            counts = counts + np.bincount(self._intensity_bins(c, v), minlength=len(counts))
            return [counts, missing, rows + len(cols[c.source])]
        ok = np.isfinite(v)
        missing += int((~ok).sum())
        idx = np.searchsorted(np.asarray(b["edges"], np.float64), v[ok], side="left")
        counts = counts + np.bincount(idx, minlength=len(counts))
        return [counts, missing, rows + len(v)]

    def _intensity_bins(self, c: ProfileColumn, v: np.ndarray) -> np.ndarray:
        b = self.bins[c.name]
        if v.dtype == np.uint8 and tuple(b["edges"]) == INTENSITY_EDGES:
            return v >> 4  # the 16 fixed bins of raw pixel bytes, without a search
        x = np.clip(np.asarray(v, np.float64), 0, 255)
        return np.minimum(np.searchsorted(b["edges"], x, side="right") - 1,
                          self.size(c.name) - 1)

    def add_coded(self, accs: dict[int, dict[str, Any]], cols: Mapping[str, Any],
                  codes: np.ndarray, n_codes: int) -> dict[int, dict[str, Any]]:
        """Count a column batch whose rows belong to groups ``codes`` (0 .. n_codes - 1).

        The same counts as :meth:`add` of each group's rows into ``accs[group]`` (created
        for the groups present), without cutting the batch into groups: each numeric or
        intensity column is binned once and counted per (group, bin) by one ``bincount``.
        """
        codes = np.asarray(codes, np.int64)
        present = np.unique(codes).tolist()
        for g in present:
            if g not in accs:
                accs[g] = self.create()
        rows_per = np.bincount(codes, minlength=n_codes)
        for c in self.columns:
            if c.source not in cols:
                continue
            if c.kind == CATEGORICAL:
                for g in present:
                    sub = {c.source: np.asarray(cols[c.source])[codes == g]}
                    accs[g][c.name] = self._count(c, accs[g][c.name], sub)
                continue
            v = c.values(cols)
            size = self.size(c.name)
            per_row = len(v) // len(codes) if len(codes) else 1  # pixels: many per row
            g_of = codes if per_row == 1 else np.repeat(codes, per_row)
            lost = np.zeros(n_codes, np.int64)
            if c.kind == INTENSITY:
                idx = self._intensity_bins(c, v)
            else:
                ok = np.isfinite(v)
                if not ok.all():
                    lost = np.bincount(g_of[~ok], minlength=n_codes)
                    v, g_of = v[ok], g_of[ok]
                idx = np.searchsorted(np.asarray(self.bins[c.name]["edges"], np.float64), v,
                                      side="left")
            per = np.bincount(g_of * size + idx, minlength=n_codes * size).reshape(n_codes,
                                                                                   size)
            # As in :meth:`add`: an intensity histogram counts images, the others values.
            counted = rows_per if c.kind == INTENSITY else rows_per * per_row
            for g in present:
                counts, missing, rows = accs[g][c.name]
                accs[g][c.name] = [counts + per[g], missing + int(lost[g]),
                                   rows + int(counted[g])]
        return accs

    def merge(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Merge accumulators (sums)."""
        out = self.create()
        for acc in accs:
            for name, (counts, missing, rows) in acc.items():
                o = out[name]
                out[name] = [o[0] + counts, o[1] + missing, o[2] + rows]
        return out

    def finish(self, acc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """JSON-ready histograms (the bins, counts, missing values and rows)."""
        return {name: {**self.bins[name], "counts": [int(x) for x in counts],
                       "missing": int(missing), "rows": int(rows)}
                for name, (counts, missing, rows) in acc.items()}


def profile(columns: Sequence[ProfileColumn], batches: Iterable[Mapping[str, Any]],
            bins: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Histograms of in-memory batches (bins from the batches themselves when not given)."""
    batches = list(batches)
    if bins is None:
        sketch = BinSketch(columns)
        acc = sketch.create()
        for b in batches:
            acc = sketch.add(acc, b)
        bins = sketch.finish(acc)
    hist = Histogram(columns, bins)
    acc = hist.create()
    for b in batches:
        acc = hist.add(acc, b)
    return hist.finish(acc)


def bin_labels(h: Mapping[str, Any]) -> list[str]:
    """Readable labels of a histogram's bins (``<= 0.12``, ``(0.12, 0.5]``, ``> 3``)."""
    if h["kind"] == CATEGORICAL:
        return [str(v) for v in h["values"]]
    edges = h["edges"]
    if h["kind"] == INTENSITY:
        return [f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    if not edges:
        return ["all"]
    fmt = [f"{e:.3g}" for e in edges]
    return ([f"<= {fmt[0]}"] + [f"({a}, {b}]" for a, b in zip(fmt[:-1], fmt[1:], strict=True)]
            + [f"> {fmt[-1]}"])


# --------------------------------------------------------------------------- outputs
def output_columns(outputs: Any) -> dict[str, np.ndarray]:
    """What a model's answers are profiled by, per output (its REST answer's name).

    A probability output (rows of k > 1 values summing to 1) gives the predicted class
    ``<name>.class``; a single float per row is a score (``<name>``); integer and text
    outputs (a flag, a class name) are categories; any other array gives its per-row
    mean ``<name>.mean`` (e.g. an autoencoder's reconstruction).
    """
    named = outputs if isinstance(outputs, Mapping) else {"output": outputs}
    out: dict[str, np.ndarray] = {}
    for name, value in named.items():
        v = np.asarray(value)
        n = len(v)
        flat = v.reshape(n, -1) if v.ndim else v.reshape(1, 1)
        if v.dtype.kind in "OSU":
            out[f"{name}"] = category_strings(flat[:, 0])
        elif v.dtype.kind in "iub" and flat.shape[1] == 1:
            out[f"{name}"] = category_strings(flat[:, 0])
        elif flat.shape[1] == 1:
            out[name] = flat[:, 0].astype(np.float64)
        elif (v.dtype.kind == "f" and flat.shape[1] > 1 and n
              and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3) and flat.min() >= 0):
            out[f"{name}.class"] = flat.argmax(axis=1).astype(np.int64).astype(str).astype(
                object)
        else:
            out[f"{name}.mean"] = flat.astype(np.float64).mean(axis=1)
    return out


def prediction_columns(outputs: Mapping[str, np.ndarray]) -> tuple[ProfileColumn, ...]:
    """Profile columns of :func:`output_columns` (categories for strings, else numbers)."""
    return tuple(ProfileColumn(name, CATEGORICAL if v.dtype == object else NUMERIC, name)
                 for name, v in outputs.items())


def merge_histograms(a: Mapping[str, Mapping[str, Any]], b: Mapping[str, Mapping[str, Any]]
                     ) -> dict[str, dict[str, Any]]:
    """Sum two sets of finished histograms on the same bins (column by column)."""
    out = {name: dict(h) for name, h in a.items()}
    for name, h in b.items():
        if name not in out:
            out[name] = dict(h)
            continue
        o = out[name]
        o["counts"] = [int(x) + int(y) for x, y in zip(o["counts"], h["counts"], strict=True)]
        o["missing"] = int(o.get("missing", 0)) + int(h.get("missing", 0))
        o["rows"] = int(o.get("rows", 0)) + int(h.get("rows", 0))
    return out
