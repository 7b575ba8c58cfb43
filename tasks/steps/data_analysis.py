"""The per-run data-analysis page: what the data looked like before training (PNG + HTML).

Drawn from what preprocessing already computed (no second pass over the data): the
histograms of every profiled column in the train, validation and test splits on the
training split's bins (``stats.json``), the class balance per split (``manifest.json``),
and the quarantined rows grouped by field and reason (the quarantine file). The books'
pipeline chapter shows such a data-analysis step (distributions of every feature before
training); the drift report reuses the same histograms.

Output (``out_dir``): ``feature_histograms.png``, ``class_balance.png`` and
``data_analysis.html`` (self-contained: the pictures are embedded, so the page opens from
MLflow's artifact view as well as from disk).
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.files import read_json
from tasks.core.run import DATASET_MANIFEST, STATS
from tasks.features.drift import shares
from tasks.features.profile import bin_labels
from tasks.objectives.plots import pyplot
from tasks.spec import UseCaseSpec

HISTOGRAMS_PNG = "feature_histograms.png"
CLASSES_PNG = "class_balance.png"
PAGE = "data_analysis.html"
SPLITS = ("train", "validation", "test")
_COLORS = {"train": "#4c72b0", "validation": "#55a868", "test": "#dd8452"}
MAX_PANELS = 48


def class_names(spec: UseCaseSpec) -> list[str]:
    """Names of the label's classes, from the source or the model spec (may be empty)."""
    names = getattr(spec.source, "classes", None) or (spec.model.class_names if spec.model
                                                      else ())
    return [str(n) for n in names or ()]


def histograms_png(stats: Mapping[str, Any], path: Path, title: str,
                   order: Sequence[str] = ()) -> Path | None:
    """One panel per profiled column (in ``order`` first): each split's share per bin."""
    have = list((stats.get("train") or {}).get("histograms") or {})
    columns = ([c for c in order if c in have] + [c for c in have if c not in order])
    columns = columns[:MAX_PANELS]
    if not columns:
        return None
    plt = pyplot()
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    ncols = min(4, len(columns))
    nrows = (len(columns) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.2 * nrows + 0.6),
                             squeeze=False)
    for ax in axes.ravel()[len(columns):]:
        ax.axis("off")
    present = [s for s in SPLITS if (stats.get(s) or {}).get("histograms")]
    width = 0.8 / max(1, len(present))
    legend: dict[str, Patch] = {}
    for ax, name in zip(axes.ravel(), columns, strict=False):
        ref = stats["train"]["histograms"][name]
        x = np.arange(len(ref["counts"]))
        top = 0.0
        for i, split in enumerate(present):
            h = stats[split]["histograms"].get(name)
            if h is None:
                continue
            # One collection of bars per split: ax.bar's patch per bar cost ~1 s per page.
            heights = np.asarray(shares(h["counts"]), dtype=float)
            left = x + (i - (len(present) - 1) / 2) * width - width / 2
            ax.add_collection(PolyCollection(
                [((a, 0), (a, v), (a + width, v), (a + width, 0))
                 for a, v in zip(left, heights, strict=True)],
                facecolors=_COLORS[split], edgecolors="none"))
            top = max(top, float(heights.max(initial=0.0)))
            legend.setdefault(split, Patch(color=_COLORS[split],
                                           label=f"{split} ({h.get('rows', 0)})"))
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_ylim(0, top * 1.05 or 1.0)
        labels = bin_labels(ref)
        ax.set_xticks(x, labels, rotation=45 if len(labels) > 4 else 0,
                      ha="right" if len(labels) > 4 else "center", fontsize=6)
        missing = sum((stats[s]["histograms"].get(name) or {}).get("missing", 0)
                      for s in present)
        ax.set_title(f"{name} ({ref['kind']})" + (f", {missing} missing" if missing else ""),
                     fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.set_major_locator(MaxNLocator(4))
    height = 3.2 * nrows + 0.6
    fig.legend(handles=list(legend.values()), loc="upper right", fontsize=8,
               ncols=len(present))
    fig.suptitle(title, fontsize=12, x=0.01, ha="left")
    # Fixed margins instead of tight_layout, which draws the whole grid once more.
    fig.subplots_adjust(left=0.04, right=0.99, top=1 - 1.2 / height,
                        bottom=0.9 / height, hspace=0.85, wspace=0.22)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def class_counts(manifest: Mapping[str, Any], stats: Mapping[str, Any]
                 ) -> dict[str, dict[str, int]]:
    """Class -> count per split (the manifest's counts, else the statistics')."""
    out = {}
    for split in SPLITS:
        counts = ((manifest.get("splits") or {}).get(split) or {}).get("class_counts") or \
            (stats.get(split) or {}).get("class_counts") or {}
        if counts:
            out[split] = {str(k): int(v) for k, v in counts.items()}
    return out


def class_balance_png(counts: Mapping[str, Mapping[str, int]], names: Sequence[str],
                      path: Path, title: str) -> Path | None:
    """Rows per class in each split (bars), classes named when the use case names them."""
    if not counts:
        return None
    classes = sorted({c for per in counts.values() for c in per},
                     key=lambda c: (not c.lstrip("-").isdigit(), int(c) if c.lstrip("-")
                                    .isdigit() else 0, c))
    labels = [names[int(c)] if c.isdigit() and int(c) < len(names) else c for c in classes]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(classes) * len(counts)), 4.2))
    x = np.arange(len(classes))
    width = 0.8 / len(counts)
    for i, (split, per) in enumerate(counts.items()):
        vals = [per.get(c, 0) for c in classes]
        bars = ax.bar(x + (i - (len(counts) - 1) / 2) * width, vals, width,
                      label=f"{split} ({sum(vals)})", color=_COLORS.get(split))
        ax.bar_label(bars, fontsize=6)
    ax.set_xticks(x, labels, rotation=30 if len(classes) > 5 else 0,
                  ha="right" if len(classes) > 5 else "center", fontsize=8)
    ax.set_ylabel("rows")
    ax.set_yscale("log" if max(max(p.values()) for p in counts.values()) > 50 *
                  max(1, min(v for p in counts.values() for v in p.values() if v)) else "linear")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def quarantine_summary(path: Path | None, limit: int = 10) -> tuple[list[tuple[str, str, int]],
                                                                   list[dict[str, Any]]]:
    """Quarantined rows grouped by (field, reason), and the first records."""
    if path is None or not Path(path).is_file():
        return [], []
    groups: Counter[tuple[str, str]] = Counter()
    first: list[dict[str, Any]] = []
    with open(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            reason = str(rec.get("reason", "")).split(" (")[0]
            groups[(str(rec.get("field")), reason)] += 1
            if len(first) < limit:
                first.append(rec)
    return [(f, r, n) for (f, r), n in groups.most_common(20)], first


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path | None, alt: str) -> str:
    if path is None:
        return f"<p><em>No {html.escape(alt)}.</em></p>"
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def column_rows(stats: Mapping[str, Any]) -> list[list[Any]]:
    """One table row per (column, split): rows, missing, and min/mean/std/max when known."""
    rows = []
    for name in sorted((stats.get("train") or {}).get("histograms") or {},
                       key=lambda n: (n.rstrip("0123456789"), len(n), n)):
        for split in SPLITS:
            h = ((stats.get(split) or {}).get("histograms") or {}).get(name)
            if h is None:
                continue
            st = ((stats.get(split) or {}).get("features") or {}).get(name) or {}
            rows.append([name, split, h.get("rows", 0), h.get("missing", 0),
                         *(_fmt(st[k]) if k in st else "—" for k in ("min", "mean", "std",
                                                                      "max"))])
    return rows


def write_data_analysis(spec: UseCaseSpec, dataset_dir: Path, out_dir: Path,
                        quarantine_file: Path | None = None, run_key: str = "") -> dict[str, Path]:
    """Write the page and its pictures for one run's dataset; return their paths."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = read_json(dataset_dir / STATS)
    manifest = read_json(dataset_dir / DATASET_MANIFEST)
    title = f"{spec.name} run {run_key}".strip()
    from tasks.features.profile import data_columns

    order = [c.name for c in data_columns(spec.preprocess, spec.source.schema())]
    hist_png = histograms_png(stats, out_dir / HISTOGRAMS_PNG,
                              f"{title}: feature distributions per split "
                              "(share of rows per bin; bins from the training split)", order)
    counts = class_counts(manifest, stats)
    names = class_names(spec)
    cls_png = class_balance_png(counts, names, out_dir / CLASSES_PNG,
                                f"{title}: class balance per split")
    groups, first = quarantine_summary(quarantine_file)
    splits = manifest.get("splits") or {}
    summary_rows = [[s, (splits.get(s) or {}).get("rows", 0)] for s in SPLITS]
    quarantined = int(manifest.get("quarantined_rows") or 0)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Data analysis: {html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px;text-align:right}th{background:#f2f2f2}"
        "td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}</style>",
        "</head><body>",
        f"<h1>Data analysis: {html.escape(title)}</h1>",
        f"<p>{html.escape((spec.description.strip().splitlines() or [''])[0])}</p>",
        "<h2>Rows</h2>",
        _table(["split", "rows"], summary_rows + [["quarantined", quarantined]]),
        "<h2>Class balance</h2>",
        _img(cls_png, "class balance (the use case has no class label)"),
        "<h2>Feature distributions</h2>",
        "<p>Share of rows per bin in each split; numeric bins are the training split's "
        "deciles, categories its most frequent values, images their per-image brightness "
        "(<code>.mean</code>), contrast (<code>.std</code>) and pixel intensities "
        "(<code>.pixels</code>).</p>",
        _img(hist_png, "profiled columns"),
        "<h2>Columns</h2>",
        _table(["column", "split", "rows", "missing", "min", "mean", "std", "max"],
               column_rows(stats)),
        "<h2>Quarantined rows</h2>",
    ]
    if groups:
        parts += [_table(["field", "reason", "rows"], groups),
                  "<p>First records:</p>",
                  _table(["file", "line/row", "field", "value", "reason"],
                         [[r.get("file"), r.get("line", r.get("row")), r.get("field"),
                           str(r.get("value"))[:60], r.get("reason")] for r in first])]
    else:
        parts.append("<p>None: every row passed the source checks.</p>")
    parts.append("</body></html>")
    page = out_dir / PAGE
    page.write_text("\n".join(parts))
    out = {"html": page}
    if hist_png:
        out["histograms"] = hist_png
    if cls_png:
        out["classes"] = cls_png
    return out
