"""The score stage's figures and tables over synthetic importance.json / selection.json documents."""

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ditcompress.score.plots import (
    block_rows,
    cka_heatmap,
    criterion_bars,
    greedy_iterations,
    greedy_vs_optuna,
    image_strip,
    rms_bars,
    spearman_bars,
    trial_history,
    write_score_plots,
)
from ditcompress.utils import grid

PIXART = [str(i) for i in range(8)]
FLUX = [f"double.{i}" for i in range(4)] + [f"single.{i}" for i in range(4)]
TIMESTEPS = [999.0, 949.0, 899.0, 849.0, 799.0]


def importance_doc(blocks, *, flux=False):
    """A full importance.json: every criterion, a CKA matrix, Spearman rhos."""
    rng = np.random.default_rng(len(blocks) + flux)
    per = lambda scale=1.0: {b: round(float(v), 6) for b, v in zip(blocks, rng.random(len(blocks)) * scale)}  # noqa: E731
    cka = per()
    criteria = {
        "magnitude": per(100), "cka": cka, "cka_intensity": {b: 1 - v for b, v in cka.items()},
        "cmmd": per(), "clip_score": per(70), "rank_sum": per(16), "cmmd_per_param": per(1e-5),
        "rms": {b: 10.0 ** i for i, b in enumerate(blocks)}, "geneval": per(), "damage": per(),
    }
    if flux:
        criteria["cka_text"] = {b: v for b, v in per().items() if b.startswith("double.")}
    return {
        "family": "flux" if flux else "pixart", "model": "models/shapes/x", "modification": "remove", "c_fixed": 0.6,
        "blocks": list(blocks),
        "params": {b: 1000 for b in blocks}, "removed_params": {b: 1000 for b in blocks},
        "reference": {"cmmd": 0.19, "clip_score": 69.2, "geneval": 0.88},
        "criteria": criteria,
        "cka_matrix": {"timesteps": TIMESTEPS,
                       "values": {b: [round(float(v), 4) for v in rng.random(len(TIMESTEPS))] for b in blocks}},
        "spearman": {"magnitude": 0.1, "cka_intensity": -0.3, "cmmd": 0.8, "clip_score": -0.5, "rank_sum": 0.6,
                     "cmmd_per_param": None, "damage": 1.0},
    }


def candidates(blocks, removed, seed):
    rng = np.random.default_rng(seed)
    return {b: {"cmmd": round(float(rng.random()), 4), "clip_score": 60.0} for b in blocks if b not in removed}


def greedy_selection(blocks=PIXART):
    its, removed = [], []
    for j, chosen in enumerate(["4", "3", "5"]):
        cands = candidates(blocks, removed, j)
        its.append({"block": chosen, "cmmd": cands[chosen]["cmmd"], "clip_score": 60.0, "candidates": cands})
        removed.append(chosen)
    return {"algorithm": "greedy", "criterion": "rank_sum", "modification": "remove", "blocks": ["4", "3", "5"],
            "ratios": {"3": 1.0, "4": 1.0, "5": 1.0}, "cmmd": 0.4, "clip_score": 66.0, "removed_params": 3000,
            "kept_fraction": 0.625, "teacher_params": 8000, "iterations": its}


def optuna_selection():
    sel = greedy_selection()
    sel.update(algorithm="optuna", blocks=["3", "5", "6"], cmmd=0.3,
               greedy={"blocks": ["4", "3", "5"], "cmmd": 0.4},
               trials=[{"number": i, "blocks": b, "cmmd": c} for i, (b, c) in enumerate(
                   [(["4", "3", "5"], 0.4), (["0", "1", "2"], 0.9), (["3", "5", "6"], 0.3),
                    (["1", "2", "7"], None), (["2", "3", "4"], 0.5)])])
    return sel


def bar_values(ax):
    """{block id: height} of the bars a bar function drew (their gid is '<criterion>:<block>')."""
    return {p.get_gid().split(":", 1)[1]: p.get_height() for p in ax.patches}


@pytest.mark.parametrize("blocks", [PIXART, FLUX], ids=["pixart", "flux"])
def test_criterion_bars_one_bar_per_block_and_the_overlay_line(blocks):
    doc = importance_doc(blocks, flux=blocks is FLUX)
    fig = criterion_bars(doc, "magnitude", overlay=("cmmd", "damage"))
    assert isinstance(fig, Figure)
    ax, *twins = fig.axes
    assert len(ax.patches) == len(blocks)
    assert bar_values(ax) == pytest.approx(doc["criteria"]["magnitude"])
    assert [t.get_text() for t in ax.get_xticklabels()] == blocks  # execution order
    assert len(twins) == 2  # one right axis per overlay
    cmmd = next(line for line in twins[0].lines if line.get_gid() == "cmmd")
    assert list(cmmd.get_ydata()) == pytest.approx([doc["criteria"]["cmmd"][b] for b in blocks])
    assert [line.get_gid() for line in twins[0].lines] == ["cmmd", "reference:cmmd"]  # the unmodified model
    assert list(twins[1].lines[0].get_ydata()) == pytest.approx([doc["criteria"]["damage"][b] for b in blocks])
    title = ax.get_title()
    assert "magnitude" in title and "CMMD" in title and "damage" in title


def test_criterion_bars_partial_criterion_missing_overlay_and_missing_criterion():
    doc = importance_doc(FLUX, flux=True)
    fig = criterion_bars(doc, "cka_text", overlay="clip_score")
    assert bar_values(fig.axes[0]) == pytest.approx(doc["criteria"]["cka_text"])
    assert len(fig.axes[0].patches) == 4 and len(fig.axes[0].get_xticks()) == 8  # single blocks: no text stream
    del doc["criteria"]["damage"]
    fig = criterion_bars(doc, "cka_intensity")  # default overlay damage is absent: bars alone
    assert len(fig.axes) == 1 and "no overlay" in fig.axes[0].get_title()
    assert len(criterion_bars(doc, "cmmd", overlay=("cmmd",)).axes) == 1  # itself is no overlay
    with pytest.raises(KeyError, match="damage"):
        criterion_bars(doc, "damage")


def test_cka_heatmap_is_blocks_by_timesteps():
    doc = importance_doc(FLUX, flux=True)
    fig = cka_heatmap(doc)
    ax = fig.axes[0]
    arr = ax.images[0].get_array()
    assert arr.shape == (8, len(TIMESTEPS))
    assert np.allclose(arr, [doc["cka_matrix"]["values"][b] for b in FLUX])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["999", "949", "899", "849", "799"]
    assert [t.get_text() for t in ax.get_yticklabels()] == FLUX
    assert len(fig.axes) == 2  # the colourbar
    del doc["cka_matrix"]
    with pytest.raises(KeyError):
        cka_heatmap(doc)


def test_rms_bars_log_scale_when_it_spans_decades():
    doc = importance_doc(PIXART)
    ax = rms_bars(doc).axes[0]
    assert bar_values(ax) == pytest.approx(doc["criteria"]["rms"])
    assert ax.get_yscale() == "log"
    doc["criteria"]["rms"] = {b: 1.0 + i for i, b in enumerate(PIXART)}
    assert rms_bars(doc).axes[0].get_yscale() == "linear"


def test_spearman_bars_sorted_without_damage_and_undefined_named():
    ax = spearman_bars(importance_doc(PIXART)).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["clip_score", "cka_intensity", "magnitude", "rank_sum", "cmmd"]
    assert [p.get_width() for p in ax.patches] == pytest.approx([-0.5, -0.3, 0.1, 0.6, 0.8])
    assert "cmmd_per_param" in ax.get_xlabel()  # its rho is undefined


def test_greedy_vs_optuna_colours_consensus_greedy_only_and_optuna_only():
    sel = optuna_selection()
    fig = greedy_vs_optuna(sel, blocks=PIXART)
    ax = fig.axes[0]
    colors = {p.get_gid().split(":")[1]: matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches}
    assert list(colors) == PIXART
    assert colors["3"] == colors["5"] == "#9e9e9e"  # both
    assert colors["4"] == "#f2d44e"  # greedy only
    assert colors["6"] == "#5cb85c"  # optuna only
    assert {colors[b] for b in "0127"} == {"#ffffff"}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "CMMD 0.4000" in legend[1] and "CMMD 0.3000" in legend[2]
    assert greedy_vs_optuna(greedy_selection()) is None


def test_greedy_iterations_heatmap_of_candidates_with_the_chosen_marked():
    sel = greedy_selection()
    fig = greedy_iterations(sel)  # blocks from the candidates
    ax = fig.axes[0]
    arr = np.ma.filled(ax.images[0].get_array(), np.nan)
    assert arr.shape == (8, 3)
    for j, it in enumerate(sel["iterations"]):
        for b in PIXART:
            expected = it["candidates"][b]["cmmd"] if b in it["candidates"] else np.nan
            assert arr[int(b), j] == pytest.approx(expected, nan_ok=True)
    marks = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches]
    assert marks == [(0, 4), (1, 3), (2, 5)]
    assert greedy_iterations({"algorithm": "ranking", "blocks": ["1"]}) is None


def test_trial_history_optuna_running_best_and_exhaustive_sorted():
    sel = optuna_selection()
    ax = trial_history(sel).axes[0]
    scatter = next(c for c in ax.collections if c.get_gid() == "trials")
    assert scatter.get_offsets().tolist() == [[0, 0.4], [1, 0.9], [2, 0.3], [4, 0.5]]  # trial 3 failed
    best = next(line for line in ax.lines if line.get_gid() == "running_best")
    assert list(best.get_ydata()) == pytest.approx([0.4, 0.4, 0.3, 0.3])
    assert next(line for line in ax.lines if line.get_gid() == "greedy").get_ydata()[0] == pytest.approx(0.4)

    sel["algorithm"] = "exhaustive"
    ax = trial_history(sel).axes[0]
    assert list(next(line for line in ax.lines if line.get_gid() == "sorted").get_ydata()) == [0.3, 0.4, 0.5, 0.9]
    star = next(line for line in ax.lines if line.get_gid() == "greedy_trial")
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (2, 0.4)  # the greedy subset ranks second
    assert trial_history(greedy_selection()) is None


def test_block_rows_equal_the_criteria():
    doc = importance_doc(FLUX, flux=True)
    rows = block_rows(doc)
    assert [r["block"] for r in rows] == FLUX
    for row in rows:
        b = row["block"]
        present = {k: v[b] for k, v in doc["criteria"].items() if b in v}
        assert row == {"block": b, **present}
    assert "cka_text" in rows[0] and "cka_text" not in rows[-1]
    doc["criteria"]["cmmd"]["double.1"] = float("nan")  # no JSON number: left out like a missing value
    assert "cmmd" not in block_rows(doc)[1] and "cmmd" in block_rows(doc)[0]


def test_write_score_plots_writes_every_applicable_figure(tmp_path):
    doc = importance_doc(PIXART)
    paths = write_score_plots(doc, optuna_selection(), tmp_path / "plots")
    names = [p.name for p in paths]
    assert names[-1] == "blocks.json"
    assert {"magnitude_vs_cmmd.png", "cka_intensity_vs_damage.png", "rank_sum.png", "cka_heatmap.png",
            "rms.png", "spearman.png", "greedy_vs_optuna.png", "greedy_iterations.png", "trials.png"} <= set(names)
    assert "cka_text_vs_cmmd.png" not in names  # pixart has no text stream
    for p in paths[:-1]:
        with Image.open(p) as im:
            assert im.format == "PNG"
    assert json.loads(paths[-1].read_text()) == block_rows(doc)

    # only magnitude and no selection: one bare figure and the table
    small = {"blocks": PIXART, "criteria": {"magnitude": doc["criteria"]["magnitude"]}}
    paths = write_score_plots(small, None, tmp_path / "small")
    assert [p.name for p in paths] == ["magnitude.png", "blocks.json"]
    assert json.loads(paths[-1].read_text()) == [{"block": b, "magnitude": doc["criteria"]["magnitude"][b]}
                                                 for b in PIXART]


def test_image_strip_columns_rows_labels_and_upscaled_cells():
    rng = np.random.default_rng(0)
    labels = ["teacher", "-3", "-4"]
    prompts = ["a red circle", "a blue square"]
    rows = {label: [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in prompts] for label in labels}
    strip = image_strip(rows, prompts)
    scale = math.ceil(grid.MIN_TILE_PX / 32)
    tile, pad = 32 * scale, grid.PAD_PX
    assert strip.width == len(labels) * (tile + pad) + pad
    arr = np.asarray(strip)
    # locate the teacher's first image by its pixels, then every cell at the grid's pitch
    up = lambda im: np.repeat(np.repeat(im, scale, axis=0), scale, axis=1)  # noqa: E731
    y0 = next(y for y in range(arr.shape[0] - tile) if np.array_equal(arr[y:y + tile, pad:pad + tile],
                                                                       up(rows["teacher"][0])))
    assert y0 > pad  # the label band is above the images
    assert (arr[:y0 - pad] < 128).any()  # and has text in it
    # height: label band, then rows of equal height (the prompt is written under the teacher's image)
    band = y0 - pad
    pitch, rest = divmod(strip.height - band - pad, len(prompts))
    assert rest == 0 and pitch >= tile + pad
    for r in range(len(prompts)):
        for c, label in enumerate(labels):
            x, y = pad + c * (tile + pad), y0 + r * pitch
            assert np.array_equal(arr[y:y + tile, x:x + tile], up(rows[label][r]))
        assert (arr[y0 + r * pitch + tile:y0 + (r + 1) * pitch, pad:pad + tile] < 128).any()  # the prompt
    with pytest.raises(ValueError, match="prompts"):
        image_strip({"teacher": rows["teacher"][:1]}, prompts)
