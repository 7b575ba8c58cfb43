"""The drift (or skew) report: Markdown, JSON and a PNG of the worst columns' histograms.

Written into a folder (``report.md``, ``report.json``, ``drift.png``) and, by the caller,
onto an MLflow run under ``drift/`` (training runs, batch scoring) or ``skew/``
(monitoring). The Markdown and JSON are pure functions of a
:class:`~tasks.features.drift.DriftReport`; the PNG draws, for the worst columns, the
reference's share per bin (the champion's training data, or its own answers) beside the
new data's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.files import write_json
from tasks.features.drift import NOT_JUDGED, PREDICTION, ColumnDrift, DriftReport, shares
from tasks.features.profile import bin_labels
from tasks.objectives.plots import pyplot

REPORT_MD, REPORT_JSON, REPORT_PNG = "report.md", "report.json", "drift.png"
_NAMES = {"psi": "PSI", "jensen_shannon": "JS", "linf": "L-inf"}


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def render_markdown(report: DriftReport, title: str) -> str:
    """The report as Markdown: what was compared, the verdict, one row per column."""
    ref, cur = report.reference, report.current
    lines = [f"# {title}", "",
             f"**Status: {report.status.upper()}** — {report.summary()}", "",
             f"- Reference: {ref.get('model', '?')} version {ref.get('version', '?')}, "
             f"{ref.get('data', '')}",
             f"- New data: {cur.get('data', '?')} ({cur.get('rows', '?')} rows)"]
    for key in ("forced", "force_reason", "note"):
        if cur.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {cur[key]}")
    lines += ["", "| column | kind | distance | value | warn | fail | status | PSI | JS | "
              "L-inf | rows (ref / new) |",
              "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for c in report.columns:
        d = c.distances
        status = f"**{c.status}**" if c.status in ("warn", "fail") else c.status
        if c.note:
            status += f" ({c.note})"
        lines.append(
            f"| {c.name} | {c.kind} | {_NAMES[c.metric]} | {_num(c.value)} | {c.warn:g} | "
            f"{'—' if c.fail is None else f'{c.fail:g}'} | {status} | {_num(d.get('psi'))} | "
            f"{_num(d.get('jensen_shannon'))} | {_num(d.get('linf'))} | "
            f"{c.reference_rows} / {c.current_rows} |")
    if report.notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in report.notes]
    lines += ["", f"![worst columns]({REPORT_PNG})", ""]
    return "\n".join(lines)


def worst_columns(report: DriftReport, k: int = 6) -> list[ColumnDrift]:
    """The ``k`` columns to draw: judged ones worst first, then the rest."""
    judged = [c for c in report.columns if c.status != NOT_JUDGED and c.distances]
    rest = [c for c in report.columns if c not in judged and c.distances]
    return (judged + rest)[:k]


def histograms_png(report: DriftReport, path: Path, k: int = 6,
                   labels: tuple[str, str] = ("champion data", "new data")) -> Path | None:
    """Bars of the reference's and the new data's shares per bin, for the worst columns."""
    cols = worst_columns(report, k)
    if not cols:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    n = len(cols)
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    height = 3.9 * nrows + 0.5
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, height), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, c in zip(axes.ravel(), cols, strict=False):
        key = c.name.removeprefix(PREDICTION)
        group = "predictions" if c.name.startswith(PREDICTION) else "features"
        ref = report.histograms["reference"].get(group, {}).get(key)
        cur = report.histograms["current"].get(group, {}).get(key)
        if ref is None or cur is None:
            ax.axis("off")
            continue
        p, q = shares(ref["counts"]), shares(cur["counts"])
        x = np.arange(len(p))
        ax.bar(x - 0.2, p, 0.4, label=labels[0], color="#4c72b0")
        ax.bar(x + 0.2, q, 0.4, label=labels[1], color="#dd8452")
        names = bin_labels(ref)
        ax.set_xticks(x, names, rotation=45 if len(names) > 4 else 0, ha="right"
                      if len(names) > 4 else "center", fontsize=7)
        ax.set_ylabel("share of rows" if c.kind != "intensity" else "share of pixels")
        ax.yaxis.set_major_locator(MaxNLocator(5))
        value = "not judged" if c.value is None else f"{_NAMES[c.metric]} {c.value:.3f}"
        color = {"fail": "#c0392b", "warn": "#d68910"}.get(c.status, "black")
        ax.set_title(f"{c.name}\n{value} — {c.status}", fontsize=10, color=color)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.kind}: {report.status.upper()} — {labels[0]} vs {labels[1]}",
                 fontsize=12)
    # Fixed margins: tight_layout would draw every axis once more just to measure it.
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.75 / height, bottom=1.0 / height,
                        hspace=0.75, wspace=0.25)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def write_report(report: DriftReport, out_dir: Path, title: str,
                 labels: tuple[str, str] = ("champion data", "new data")
                 ) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and ``drift.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(out_dir / REPORT_JSON, report.to_dict())}
    png = histograms_png(report, out_dir / REPORT_PNG, labels=labels)
    if png is not None:
        paths["png"] = png
    md = out_dir / REPORT_MD
    md.write_text(render_markdown(report, title))
    paths["md"] = md
    return paths


def histograms_of(reference: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
                  group: str, report: DriftReport) -> None:
    """Keep the compared histograms of one group (``features``/``predictions``) in a report."""
    report.histograms["reference"][group] = dict(reference or {})
    report.histograms["current"][group] = dict(current or {})
