"""Figures of the pruning-schedule stage (thesis 4.6, figs 5.9 and 5.10): what each round modified, and
quality against size.

Pure functions over the stage's per-round rows, one dict per round, round 0 being the teacher:
`{"round", "kept_fraction", "params", "geneval", "cmmd", "clip_score", "blocks", "ratios"}`, where
`ratios` maps block id -> fraction of that block's current parameters removed in that round (1.0: the
block was removed). Metrics may be missing (evaluation switched off). Every figure is a bare
`matplotlib.figure.Figure`; `write_schedule_plots` writes them as PNGs with the rows DVC's plots read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ditcompress.score.plots import _natural_key

# metric -> (panel title, axis label), in panel order
METRICS = {
    "geneval": ("GenEval", "GenEval (higher is better)"),
    "cmmd": ("CMMD", "CMMD (lower is better)"),
    "clip_score": ("CLIP score", "CLIP score (higher is better)"),
}
KEPT_LABEL = "fraction of teacher parameters kept"
DPI = 120
GONE = "#bdbdbd"  # cells of a block removed in an earlier round


# ---------------------------------------------------------------- helpers

def _ordered(rows: Sequence[Mapping]) -> list[Mapping]:
    """The rows by round (the stage appends them in order, but merged logs need not be)."""
    return sorted(rows, key=lambda r: r["round"])


def _number(value) -> float | None:
    """A plottable float, or None for a missing / NaN / non-numeric value."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _points(rows: Sequence[Mapping], metric: str) -> tuple[list[float], list[float]]:
    """(kept fractions, values) of the rows that have both, in round order."""
    xs, ys = [], []
    for row in _ordered(rows):
        x, y = _number(row.get("kept_fraction")), _number(row.get(metric))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def _ratio_text(ratio: float) -> str:
    return "removed" if ratio >= 1.0 else f"{ratio:.2f}"


# ---------------------------------------------------------------- figures

def quality_curves(runs: Mapping[str, Sequence[Mapping]]) -> Figure:
    """Thesis fig 5.10: GenEval, CMMD and CLIP score against the kept fraction, one line per run.

    Rows missing a metric (or the kept fraction) are skipped; a panel no run has values for says so.
    """
    fig = Figure(figsize=(12.0, 4.0), layout="constrained", dpi=DPI)
    axes = fig.subplots(1, len(METRICS))
    # one colour per run across all panels, so a single legend serves them
    colors = {name: f"C{i % 10}" for i, name in enumerate(runs)}
    handles: dict[str, object] = {}
    for ax, (metric, (title, label)) in zip(axes, METRICS.items()):
        drawn = False
        for name, rows in runs.items():
            xs, ys = _points(rows, metric)
            if not xs:
                continue
            (line,) = ax.plot(xs, ys, "o-", color=colors[name], markersize=4, label=name, gid=f"{name}:{metric}")
            handles.setdefault(name, line)
            drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not evaluated", transform=ax.transAxes, ha="center", va="center",
                    fontsize=10, color="grey")
            ax.set_xlim(1.0, 0.0)  # inverted like the others, with no data to set the range
            ax.set_yticks([])  # an empty 0..1 value axis would read as a scale
        else:
            ax.invert_xaxis()  # 1.0 (the teacher) on the left: compression grows to the right
        ax.set_xlabel(KEPT_LABEL)
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    if handles:
        fig.legend(handles=[handles[n] for n in runs if n in handles], loc="outside lower center",
                   ncol=min(5, len(handles)), fontsize=8, frameon=False)
    fig.suptitle("quality vs compression", fontsize=11)
    return fig


def block_heatmap(rows: Sequence[Mapping], blocks: Sequence[str]) -> Figure:
    """Thesis fig 5.9: block x round matrix of the fraction of each block removed in that round.

    `blocks`: every block id in execution order (ids only the rows name are appended in natural order).
    Cells of a block removed (ratio 1.0) in an earlier round are NaN, drawn grey and hatched, unless a
    later round names the block again. The matrix is the axes' first image.
    """
    rounds = [r for r in _ordered(rows) if r["round"] >= 1]  # round 0 is the teacher: nothing modified
    blocks = [str(b) for b in blocks]
    named = {str(b) for r in rounds for b in (r.get("ratios") or {})}
    blocks += sorted(named - set(blocks), key=_natural_key)
    index = {b: i for i, b in enumerate(blocks)}
    data = np.zeros((len(blocks), len(rounds)))
    gone: set[str] = set()
    for j, row in enumerate(rounds):
        ratios = {str(b): _number(c) for b, c in (row.get("ratios") or {}).items()}
        for b in gone - set(ratios):
            data[index[b], j] = np.nan
        for b, c in ratios.items():
            data[index[b], j] = 0.0 if c is None else c
            if c is not None and c >= 1.0:
                gone.add(b)

    n_b, n_r = data.shape
    empty = not n_b or not n_r
    fig = Figure(figsize=(4.5, 3.2) if empty else (max(4.5, 0.7 * n_r + 3.5), max(3.2, 0.28 * n_b + 1.8)),
                 layout="constrained", dpi=DPI)
    ax = fig.add_subplot()
    ax.set_title("Blocks modified per round", fontsize=10)
    if empty:  # the teacher only: nothing to draw, but the file still exists for DVC
        ax.text(0.5, 0.5, "no rounds yet", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    cmap = matplotlib.colormaps["Reds"].with_extremes(bad=GONE)
    image = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, aspect=max(20, n_b))  # a bar as thin for Flux's 57 blocks as for 8
    bar.set_label("fraction of the block removed this round", fontsize=8)  # small: runs along a short bar
    for i, b in enumerate(blocks):
        for j, row in enumerate(rounds):
            value = data[i, j]
            if np.isnan(value):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="none", edgecolor="grey", hatch="///",
                                       linewidth=0, gid=f"gone:{row['round']}:{b}"))
            elif value > 0:
                ax.text(j, i, _ratio_text(value), ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 else "black")
    ax.set_xticks(range(n_r))
    kept = [_number(r.get("kept_fraction")) for r in rounds]
    ax.set_xticklabels([f"{r['round']}" + (f"\n{k:.0%}" if k is not None else "") for r, k in zip(rounds, kept)],
                       fontsize=8)
    ax.set_xlabel("round (% of teacher parameters kept)" if any(k is not None for k in kept) else "round")
    ax.set_yticks(range(n_b))
    ax.set_yticklabels(blocks, fontsize=8 if n_b > 16 else 9)
    ax.set_ylabel("block")
    if np.isnan(data).any():  # a removal in the last round leaves no cell to explain
        fig.legend(handles=[Patch(facecolor=GONE, edgecolor="grey", hatch="///", label="removed earlier")],
                   loc="outside lower center", fontsize=8, frameon=False)
    return fig


def ratio_table(rows: Sequence[Mapping]) -> list[dict]:
    """Flat `{"round", "block", "ratio"}` rows, by round then natural block order: DVC's plot data."""
    table = []
    for row in _ordered(rows):
        ratios = row.get("ratios") or {}
        for b in sorted(ratios, key=_natural_key):
            if ratios[b] is not None:
                table.append({"round": row["round"], "block": str(b), "ratio": ratios[b]})
    return table


# ---------------------------------------------------------------- writer

def curve_rows(rows: Sequence[Mapping]) -> list[dict]:
    """The rows' numbers and strings, every row with the same keys (None where a row has none).

    DVC's plots only read a list of rows whose keys all agree; the teacher's row has no
    `cmmd_before`, and lists (blocks) and maps (ratios) are in `ratio_table`.
    """
    keys = list(dict.fromkeys(k for r in _ordered(rows) for k, v in r.items() if not isinstance(v, (list, dict))))
    return [{k: r.get(k) for k in keys} for r in _ordered(rows)]


def write_schedule_plots(rows: Sequence[Mapping], blocks: Sequence[str], out_dir: str | Path,
                         name: str = "schedule") -> list[Path]:
    """Write `quality.png`, `blocks.png`, `rounds.json` (`curve_rows`) and `ratios.json` to `out_dir`.

    Returns the written paths in that order; `name` is the run's label in the quality legend.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, make in (("quality", lambda: quality_curves({name: rows})),
                       ("blocks", lambda: block_heatmap(rows, blocks))):
        fig = make()
        path = out_dir / f"{stem}.png"
        fig.savefig(path, dpi=DPI)
        fig.clear()  # a bare Figure: nothing registered with pyplot, dropping it frees it
        written.append(path)
    for stem, doc in (("rounds", curve_rows(rows)), ("ratios", ratio_table(rows))):
        path = out_dir / f"{stem}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        written.append(path)
    return written
