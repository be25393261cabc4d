"""Figures of the `score` stage (thesis 4.2, 5.1.2): block importance per criterion and the block selection.

Pure functions over the stage's two JSON documents, `importance.json` and `selection.json` (plain dicts);
no model code. Every figure is a bare `matplotlib.figure.Figure` (not registered with pyplot, so nothing
has to be closed and no backend has to be chosen); `write_score_plots` writes them all as PNGs next to
`blocks.json`, the per-block rows DVC's bar plots read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from ditcompress.utils import grid
from ditcompress.utils.grid import FONT_PX, PAD_PX, _wrap, sample_grid, to_uint8_images

# criterion -> axis label
LABELS = {
    "magnitude": "weight magnitude (Frobenius norm)",
    "cka": "mean CKA(block input, output)",
    "cka_intensity": "CKA intensity (1 - CKA)",
    "cka_text": "mean CKA, text stream",
    "cmmd": "CMMD, block modified",
    "clip_score": "CLIP score, block modified",
    "rank_sum": "rank sum (CMMD + CLIP score)",
    "cmmd_per_param": "CMMD per removed parameter",
    "rms": "feature RMS after the block",
    "geneval": "GenEval, block modified",
    "damage": "GenEval damage (reference - modified)",
}
# short names, for titles and crowded axes
SHORT = {"cmmd": "CMMD", "clip_score": "CLIP score", "geneval": "GenEval", "damage": "GenEval damage",
         "rank_sum": "rank sum", "cmmd_per_param": "CMMD per parameter", "cka_intensity": "CKA intensity",
         "cka_text": "CKA, text stream", "cka": "CKA", "magnitude": "magnitude", "rms": "RMS"}
# structural criteria: bars against every measured metric, one figure each (thesis figs 5.2-5.5)
STRUCTURAL = ("magnitude", "cka_intensity", "cka_text")
# measured per-block metrics drawn as the line over the structural bars
MEASURED = ("cmmd", "clip_score", "damage")
# render-based criteria: bars with the measured damage as the line
RENDERED = ("cmmd", "clip_score", "rank_sum", "cmmd_per_param", "damage")
DPI = 120

GROUP_COLORS = ("tab:blue", "tab:orange", "tab:cyan", "tab:olive")
LINE_COLORS = ("tab:red", "tab:purple", "tab:green", "tab:brown")
BOTH, FIRST_ONLY, SECOND_ONLY, NEITHER = "#9e9e9e", "#f2d44e", "#5cb85c", "white"


# ---------------------------------------------------------------- helpers

def _natural_key(block: str) -> list:
    """'double.10' after 'double.9', '10' after '9'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(block))]


def _group(block: str) -> str:
    """The stream group of a block id: 'double' for 'double.3', '' for PixArt's '3'."""
    return str(block).rpartition(".")[0]


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _modification(importance: Mapping) -> str:
    """'removed' or 'SVD-compressed (c=0.6)', for titles."""
    if importance.get("modification") == "svd":
        c = importance.get("c_fixed")
        return "SVD-compressed" + (f" (c={c:g})" if c is not None else "")
    return "removed"


def _criterion(importance: Mapping, name: str) -> dict:
    values = (importance.get("criteria") or {}).get(name)
    if not values:
        raise KeyError(f"importance has no criterion {name!r} (present: {', '.join(importance.get('criteria') or {})})")
    return values


def _block_axis(ax, blocks: Sequence[str]) -> None:
    """Block ids on the x axis, turned upright when there are many or long ones."""
    ax.set_xticks(range(len(blocks)))
    vertical = len(blocks) > 16 or max((len(b) for b in blocks), default=0) > 3
    ax.set_xticklabels(blocks, rotation=90 if vertical else 0, fontsize=8 if vertical else 9)
    ax.set_xlim(-0.6, len(blocks) - 0.4)
    ax.set_xlabel("block (execution order)")


def _figure(n_blocks: int, height: float = 4.0, min_width: float = 6.0, extra: float = 0.0) -> Figure:
    return Figure(figsize=(max(min_width, 0.3 * n_blocks + 2.5) + extra, height), layout="constrained", dpi=DPI)


def _bars(ax, blocks: Sequence[str], values: Mapping, *, gid: str) -> list:
    """One bar per block present in `values`, coloured by stream group (Flux: double / single)."""
    groups = list(dict.fromkeys(_group(b) for b in blocks))
    colors = {g: GROUP_COLORS[i % len(GROUP_COLORS)] for i, g in enumerate(groups)}
    handles = []
    for g in groups:
        xs = [i for i, b in enumerate(blocks) if _group(b) == g and values.get(b) is not None]
        if not xs:
            continue
        bars = ax.bar(xs, [float(values[blocks[i]]) for i in xs], color=colors[g], width=0.75,
                      label=f"{g} blocks" if g else None, gid=gid)
        for i, bar in zip(xs, bars):
            bar.set_gid(f"{gid}:{blocks[i]}")
        if g:
            handles.append(bars)
    return handles


# ---------------------------------------------------------------- importance figures

def criterion_bars(importance: Mapping, criterion: str, *, overlay: str | Iterable[str] = ("damage",)) -> Figure:
    """Bars of one criterion per block, each metric of `overlay` as a line on its own right axis.

    Thesis figs 5.2-5.5: magnitude or CKA intensity bars against CMMD / CLIP score / damage per block.
    Overlays that are missing from the document, or equal to `criterion`, are left out.
    Raises KeyError when `criterion` is missing.
    """
    blocks = [str(b) for b in importance["blocks"]]
    values = _criterion(importance, criterion)
    criteria = importance.get("criteria") or {}
    overlays = [overlay] if isinstance(overlay, str) else list(overlay)
    overlays = [m for m in dict.fromkeys(overlays) if m != criterion and criteria.get(m)]

    fig = _figure(len(blocks), extra=1.1 * max(0, len(overlays) - 1))
    ax = fig.add_subplot()
    handles = _bars(ax, blocks, values, gid=criterion)
    ax.set_ylabel(_label(criterion))
    _block_axis(ax, blocks)
    reference = importance.get("reference") or {}
    for k, name in enumerate(overlays):
        twin = ax.twinx()
        if k:  # every further metric gets its own spine, moved out to the right
            twin.spines["right"].set_position(("outward", 60 * k))
        color = LINE_COLORS[k % len(LINE_COLORS)]
        xs = [i for i, b in enumerate(blocks) if criteria[name].get(b) is not None]
        (line,) = twin.plot(xs, [float(criteria[name][blocks[i]]) for i in xs], "o-", color=color,
                            markersize=4, label=_label(name), gid=name)
        handles.append(line)
        if reference.get(name) is not None:
            ref = twin.axhline(float(reference[name]), color=color, linestyle="--", linewidth=1,
                               label=f"{SHORT.get(name, name)}, unmodified model", gid=f"reference:{name}")
            handles.append(ref)
        twin.set_ylabel(_label(name) if len(overlays) == 1 else SHORT.get(name, name), color=color)
        twin.tick_params(axis="y", colors=color)
    line_text = ", ".join(SHORT.get(m, m) for m in overlays) if overlays else "no overlay"
    ax.set_title(f"{_label(criterion)} per block, block {_modification(importance)}\nline: {line_text}",
                 fontsize=10)
    if handles:
        fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=min(4, len(handles)), frameon=False)
    return fig


def cka_heatmap(importance: Mapping) -> Figure:
    """Block x sampling-timestep heatmap of the mean CKA of every block's input and output (thesis appendix A).

    Raises KeyError when the document has no `cka_matrix`, ValueError when a row's length differs from
    the timesteps'.
    """
    matrix = importance.get("cka_matrix") or {}
    if not matrix.get("values"):
        raise KeyError("importance has no cka_matrix")
    timesteps = [float(t) for t in matrix["timesteps"]]
    blocks = [str(b) for b in importance["blocks"] if str(b) in matrix["values"]]
    blocks += sorted((b for b in matrix["values"] if b not in blocks), key=_natural_key)
    for b in blocks:
        if len(matrix["values"][b]) != len(timesteps):
            raise ValueError(f"cka_matrix: block {b!r} has {len(matrix['values'][b])} values "
                             f"for {len(timesteps)} timesteps")
    data = np.array([[np.nan if v is None else float(v) for v in matrix["values"][b]] for b in blocks], float)

    n_b, n_t = data.shape
    fig = Figure(figsize=(max(5.0, 0.45 * n_t + 2.5), max(3.0, 0.28 * n_b + 1.5)), layout="constrained", dpi=DPI)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, label="mean CKA (1: block changes nothing)")
    step = max(1, math.ceil(n_t / 25))
    ax.set_xticks(range(0, n_t, step))
    ax.set_xticklabels([f"{t:g}" for t in timesteps[::step]], rotation=90, fontsize=8)
    ax.set_xlabel("sampling timestep")
    ax.set_yticks(range(n_b))
    ax.set_yticklabels(blocks, fontsize=8 if n_b > 16 else 9)
    ax.set_ylabel("block")
    if n_b * n_t <= 240:  # small enough to read the values
        for i in range(n_b):
            for j in range(n_t):
                if np.isfinite(data[i, j]):
                    ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if data[i, j] < 0.6 else "black")
    ax.set_title("mean CKA of block input and output per timestep", fontsize=10)
    return fig


def rms_bars(importance: Mapping) -> Figure:
    """RMS of the features after every block (thesis fig 5.12); log scale when it spans two decades."""
    blocks = [str(b) for b in importance["blocks"]]
    values = _criterion(importance, "rms")
    fig = _figure(len(blocks))
    ax = fig.add_subplot()
    handles = _bars(ax, blocks, values, gid="rms")
    positive = [float(v) for v in values.values() if v is not None and float(v) > 0]
    if positive and len(positive) == sum(v is not None for v in values.values()) and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    ax.set_ylabel(_label("rms"))
    _block_axis(ax, blocks)
    ax.set_title("feature RMS after each block (unmodified model)", fontsize=10)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left")
    return fig


def spearman_bars(importance: Mapping) -> Figure:
    """Spearman's rho of each criterion against the measured damage, sorted (largest at the top).

    Criteria whose rho is missing or NaN (a constant criterion) are named under the axis instead.
    Raises KeyError when the document has no `spearman`.
    """
    rho = {k: v for k, v in (importance.get("spearman") or {}).items() if k != "damage"}
    if not rho:
        raise KeyError("importance has no spearman")
    valid = {k: float(v) for k, v in rho.items() if v is not None and math.isfinite(float(v))}
    missing = [k for k in rho if k not in valid]
    names = sorted(valid, key=lambda k: valid[k])  # barh draws bottom-up: the largest ends on top
    fig = Figure(figsize=(6.0, max(2.5, 0.4 * len(names) + 1.5)), layout="constrained", dpi=DPI)
    ax = fig.add_subplot()
    bars = ax.barh(range(len(names)), [valid[k] for k in names],
                   color=["tab:green" if valid[k] >= 0 else "tab:red" for k in names], gid="spearman")
    for bar, k in zip(bars, names):
        bar.set_gid(f"spearman:{k}")
        x = valid[k]
        ax.text(x + (0.03 if x >= 0 else -0.03), bar.get_y() + bar.get_height() / 2, f"{x:+.2f}",
                va="center", ha="left" if x >= 0 else "right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1.15, 1.15)
    xlabel = "Spearman rho vs measured damage (GenEval drop)"
    if missing:
        xlabel += f"\nundefined: {', '.join(missing)}"
    ax.set_xlabel(xlabel)
    ax.set_title(f"which criterion predicts the damage ({len(importance.get('blocks', []))} blocks)", fontsize=10)
    return fig


def block_rows(importance: Mapping) -> list[dict]:
    """One row per block in execution order, {"block": id, <criterion>: value, ...}: DVC's bar plot data.

    A criterion without a value for a block (cka_text of Flux's single blocks), or with NaN / inf (which
    is no JSON number), is left out of that row.
    """
    criteria = importance.get("criteria") or {}
    rows = []
    for b in importance["blocks"]:
        row = {"block": str(b)}
        for name, values in criteria.items():
            value = (values or {}).get(str(b))
            if value is not None and not (isinstance(value, float) and not math.isfinite(value)):
                row[name] = value
        rows.append(row)
    return rows


# ---------------------------------------------------------------- selection figures

def _selection_blocks(selection: Mapping, blocks: Sequence[str] | None) -> list[str]:
    """All block ids, in execution order: given, or gathered from the document."""
    if blocks is not None:
        return [str(b) for b in blocks]
    seen = set(map(str, selection.get("blocks") or []))
    seen |= set(map(str, (selection.get("greedy") or {}).get("blocks") or []))
    for it in selection.get("iterations") or []:
        seen |= set(map(str, it.get("candidates") or {}))
        if it.get("block") is not None:
            seen.add(str(it["block"]))
    for trial in selection.get("trials") or []:
        seen |= set(map(str, trial.get("blocks") or []))
    return sorted(seen, key=_natural_key)


def _score_text(doc: Mapping) -> str:
    parts = [f"CMMD {doc['cmmd']:.4f}" if doc.get("cmmd") is not None else None,
             f"CLIP {doc['clip_score']:.2f}" if doc.get("clip_score") is not None else None]
    return ", ".join(p for p in parts if p) or "no score"


def greedy_vs_optuna(selection: Mapping, *, blocks: Sequence[str] | None = None) -> Figure | None:
    """Thesis fig 5.7 for one round: the blocks of the greedy prior against the final (optuna) selection.

    One cell per block: chosen by both grey, greedy only yellow, optuna only green, neither white;
    the legend names each result's CMMD. `blocks`: every block id in execution order (default: those
    the document names). None when the document has no `greedy` prior.
    """
    greedy = selection.get("greedy")
    if not greedy:
        return None
    name = selection.get("algorithm") or "selection"
    blocks = _selection_blocks(selection, blocks)
    first, second = set(map(str, greedy.get("blocks") or [])), set(map(str, selection.get("blocks") or []))
    fig = Figure(figsize=(max(7.0, 0.32 * len(blocks) + 1.0), 2.2), layout="constrained", dpi=DPI)
    ax = fig.add_subplot()
    for i, b in enumerate(blocks):
        color = (BOTH if b in first and b in second else FIRST_ONLY if b in first
                 else SECOND_ONLY if b in second else NEITHER)
        ax.add_patch(Rectangle((i - 0.45, -0.45), 0.9, 0.9, facecolor=color, edgecolor="black", linewidth=0.8,
                               gid=f"block:{b}"))
        ax.text(i, 0, b.rpartition(".")[2], ha="center", va="center", fontsize=7 if len(blocks) > 24 else 9)
    ax.set_xlim(-0.6, len(blocks) - 0.4)
    ax.set_ylim(-0.6, 0.6)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    groups = list(dict.fromkeys(_group(b) for b in blocks))
    if any(groups):  # Flux: the stream under each run of blocks, the index in the cell
        centers = [np.mean([i for i, b in enumerate(blocks) if _group(b) == g]) for g in groups]
        ax.set_xticks(centers, [f"{g} blocks" if g else "" for g in groups])
    else:
        ax.set_xticks([])
    ax.set_xlabel("block (execution order)")
    fig.legend(handles=[Patch(facecolor=BOTH, edgecolor="black", label="both"),
                        Patch(facecolor=FIRST_ONLY, edgecolor="black", label=f"greedy only ({_score_text(greedy)})"),
                        Patch(facecolor=SECOND_ONLY, edgecolor="black",
                              label=f"{name} only ({_score_text(selection)})")],
               loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    verb = "SVD-compressed" if selection.get("modification") == "svd" else "removed"
    ax.set_title(f"blocks {verb}: greedy prior ({_score_text(greedy)}) vs {name} ({_score_text(selection)})",
                 fontsize=10)
    return fig


def greedy_iterations(selection: Mapping, *, metric: str = "cmmd",
                      blocks: Sequence[str] | None = None) -> Figure | None:
    """Per greedy iteration, the candidate `metric` of every block: a block x iteration heatmap.

    Blocks already chosen (no longer candidates) are blank; each iteration's chosen block is outlined
    in red. None when the document has no `iterations`.
    """
    iterations = selection.get("iterations")
    if not iterations:
        return None
    blocks = _selection_blocks(selection, blocks)
    index = {b: i for i, b in enumerate(blocks)}
    data = np.full((len(blocks), len(iterations)), np.nan)
    for j, it in enumerate(iterations):
        for b, scores in (it.get("candidates") or {}).items():
            value = scores.get(metric) if isinstance(scores, Mapping) else scores
            if value is not None and str(b) in index:
                data[index[str(b)], j] = float(value)
        chosen = it.get("block")
        if chosen is not None and str(chosen) in index and np.isnan(data[index[str(chosen)], j]) \
                and it.get(metric) is not None:
            data[index[str(chosen)], j] = float(it[metric])

    n_b, n_it = data.shape
    fig = Figure(figsize=(max(4.5, 0.6 * n_it + 3.0), max(3.0, 0.28 * n_b + 1.5)), layout="constrained", dpi=DPI)
    ax = fig.add_subplot()
    cmap = "viridis_r" if metric != "clip_score" else "viridis"  # bright: the good candidates
    image = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, interpolation="nearest")
    shown = {"cmmd": "CMMD", "clip_score": "CLIP score"}.get(metric, metric)
    fig.colorbar(image, ax=ax, label=f"{shown} with the candidate also modified")
    xlabels = []
    for j, it in enumerate(iterations):
        chosen = it.get("block")
        xlabels.append(f"{j + 1}\n+{chosen}" if chosen is not None else f"{j + 1}")
        if chosen is not None and str(chosen) in index:
            ax.add_patch(Rectangle((j - 0.5, index[str(chosen)] - 0.5), 1, 1, fill=False, edgecolor="red",
                                   linewidth=2, gid=f"chosen:{j}:{chosen}"))
    ax.set_xticks(range(n_it))
    ax.set_xticklabels(xlabels, fontsize=8)
    ax.set_xlabel("greedy iteration (+ chosen block)")
    ax.set_yticks(range(n_b))
    ax.set_yticklabels(blocks, fontsize=8 if n_b > 16 else 9)
    ax.set_ylabel("candidate block")
    ax.set_title(f"greedy: candidate {shown} per iteration (chosen outlined)", fontsize=10)
    return fig


def trial_history(selection: Mapping) -> Figure | None:
    """CMMD of every evaluated block subset.

    optuna (and any other algorithm with trials): CMMD per trial number and the running best.
    exhaustive: every subset's CMMD sorted ascending, the distribution of all possible choices.
    The greedy result, when the document has one, is a dashed line (and a star where a trial evaluated
    the same blocks). None when the document has no trials with a CMMD.
    """
    trials = [t for t in selection.get("trials") or [] if t.get("cmmd") is not None]
    if not trials:
        return None
    greedy = selection.get("greedy") or {}
    greedy_set = set(map(str, greedy.get("blocks") or [])) if greedy.get("blocks") is not None else None
    fig = Figure(figsize=(7.0, 4.0), layout="constrained", dpi=DPI)
    ax = fig.add_subplot()
    if selection.get("algorithm") == "exhaustive":
        ordered = sorted(trials, key=lambda t: float(t["cmmd"]))
        xs = np.arange(1, len(ordered) + 1)
        ys = np.array([float(t["cmmd"]) for t in ordered])
        ax.plot(xs, ys, ".-", color="tab:blue", markersize=4, label="block subsets, sorted", gid="sorted")
        ax.set_xlabel("block subset (rank by CMMD)")
        title = f"exhaustive: CMMD of the {len(ordered)} subsets of {len(selection.get('blocks') or [])} blocks"
    else:
        ordered = sorted(trials, key=lambda t: t.get("number", 0))
        xs = np.array([t.get("number", i) for i, t in enumerate(ordered)], float)
        ys = np.array([float(t["cmmd"]) for t in ordered])
        ax.scatter(xs, ys, s=12, color="tab:blue", label="trial", gid="trials")
        ax.step(xs, np.minimum.accumulate(ys), where="post", color="tab:orange", label="best so far",
                gid="running_best")
        ax.set_xlabel("trial")
        title = f"{selection.get('algorithm') or 'optuna'}: CMMD per trial ({len(ordered)} trials)"
    if greedy.get("cmmd") is not None:
        ax.axhline(float(greedy["cmmd"]), color="tab:red", linestyle="--", linewidth=1,
                   label=f"greedy ({greedy['cmmd']:.4f})", gid="greedy")
        if greedy_set is not None:
            same = [(x, y) for x, y, t in zip(xs, ys, ordered) if set(map(str, t.get("blocks") or [])) == greedy_set]
            if same:
                ax.plot(*same[0], "*", color="tab:red", markersize=12, gid="greedy_trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("CMMD (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------- images

def image_strip(rows: Mapping[str, Sequence[np.ndarray]], prompts: Sequence[str]) -> Image.Image:
    """Thesis figs 5.1 / 5.6: one row per prompt, one column per key of `rows` ("teacher", then each
    modified block), the column labels in a band on top and each row's prompt under its first image.

    `rows`: column label -> one uint8 (H, W, 3) image per prompt, all of one size. The grid itself is
    `sample_grid` (tiny images upscaled, nearest, to at least MIN_TILE_PX).
    """
    labels = list(rows)
    if not labels:
        raise ValueError("image_strip: no columns")
    for label in labels:
        if len(rows[label]) != len(prompts):
            raise ValueError(f"image_strip: column {label!r} has {len(rows[label])} images for {len(prompts)} prompts")
    columns = [to_uint8_images(list(rows[label])) for label in labels]
    shapes = {c.shape[1:] for c in columns}
    if len(shapes) != 1:
        raise ValueError(f"image_strip: images of different sizes {sorted(shapes)}")
    images = [columns[c][r] for r in range(len(prompts)) for c in range(len(labels))]
    captions = [str(prompts[r]) if c == 0 else "" for r in range(len(prompts)) for c in range(len(labels))]
    body = sample_grid(images, captions, ncol=len(labels))

    w = columns[0].shape[2]
    tile_w = w * max(1, math.ceil(grid.MIN_TILE_PX / max(columns[0].shape[1:3])))  # as sample_grid scales
    cell_w = tile_w + PAD_PX
    font = ImageFont.load_default(FONT_PX)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(str(label), font, tile_w, scratch) or [""] for label in labels]
    band = max(map(len, wrapped)) * (FONT_PX + 2) + PAD_PX
    strip = Image.new("RGB", (body.width, body.height + band), "white")
    strip.paste(body, (0, band))
    draw = ImageDraw.Draw(strip)
    for c, lines in enumerate(wrapped):
        for j, line in enumerate(lines):
            draw.text((PAD_PX + c * cell_w, PAD_PX + j * (FONT_PX + 2)), line, fill="black", font=font)
    return strip


# ---------------------------------------------------------------- writer

def _importance_figures(importance: Mapping) -> list[tuple[str, object]]:
    """(name, thunk) of every figure the importance document has the data for."""
    criteria = {k for k, v in (importance.get("criteria") or {}).items() if v}
    out = []
    structural = [c for c in STRUCTURAL if c in criteria]
    if "cka" in criteria and "cka_intensity" not in criteria:
        structural.insert(1 if "magnitude" in structural else 0, "cka")
    measured = [m for m in MEASURED if m in criteria]
    for c in structural:
        if measured:
            out += [(f"{c}_vs_{m}", lambda c=c, m=m: criterion_bars(importance, c, overlay=(m,))) for m in measured]
        else:
            out.append((c, lambda c=c: criterion_bars(importance, c, overlay=())))
    rendered = [c for c in RENDERED if c in criteria]
    if "geneval" in criteria and "damage" not in criteria:
        rendered.append("geneval")
    out += [(c, lambda c=c: criterion_bars(importance, c, overlay=("damage",))) for c in rendered]
    if (importance.get("cka_matrix") or {}).get("values"):
        out.append(("cka_heatmap", lambda: cka_heatmap(importance)))
    if "rms" in criteria:
        out.append(("rms", lambda: rms_bars(importance)))
    if any(k != "damage" for k in importance.get("spearman") or {}):
        out.append(("spearman", lambda: spearman_bars(importance)))
    return out


def write_score_plots(importance: Mapping, selection: Mapping | None, out_dir: str | Path) -> list[Path]:
    """Write every figure the documents have data for as `out_dir/<name>.png`, and `out_dir/blocks.json`.

    Names: `<structural>_vs_<metric>` (magnitude / cka_intensity / cka_text bars against cmmd /
    clip_score / damage), `<criterion>` (rendered criteria with the damage line), `cka_heatmap`, `rms`,
    `spearman`, `greedy_vs_optuna`, `greedy_iterations`, `trials`. Returns the written paths, blocks.json last.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = [str(b) for b in importance["blocks"]]
    figures = _importance_figures(importance)
    if selection:
        figures += [("greedy_vs_optuna", lambda: greedy_vs_optuna(selection, blocks=blocks)),
                    ("greedy_iterations", lambda: greedy_iterations(selection, blocks=blocks)),
                    ("trials", lambda: trial_history(selection))]
    written = []
    for name, make in figures:
        fig = make()
        if fig is None:
            continue
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=DPI)
        fig.clear()  # a bare Figure: nothing registered with pyplot, dropping it frees it
        written.append(path)
    path = out_dir / "blocks.json"
    path.write_text(json.dumps(block_rows(importance), indent=2) + "\n")
    written.append(path)
    return written
