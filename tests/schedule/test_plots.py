"""The schedule stage's figures and tables over handmade per-round rows."""

import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ditcompress.schedule.plots import block_heatmap, curve_rows, quality_curves, ratio_table, write_schedule_plots

BLOCKS = [str(i) for i in range(4)]
NAN = math.nan


def rows_3():
    """Teacher + 3 rounds: block 1 removed in round 1, SVD on 0 and 2, block 3 removed in round 3."""
    return [
        {"round": 0, "kept_fraction": 1.0, "params": 1000, "geneval": 0.88, "cmmd": 0.19, "clip_score": 27.1,
         "blocks": [], "ratios": {}},
        {"round": 1, "kept_fraction": 0.75, "params": 750, "geneval": 0.85, "cmmd": 0.20, "clip_score": 26.9,
         "cmmd_before": 0.4, "cmmd_after": 0.21, "blocks": ["1"], "ratios": {"1": 1.0}},
        {"round": 2, "kept_fraction": 0.6, "params": 600, "geneval": 0.80, "cmmd": 0.25, "clip_score": 26.5,
         "blocks": ["0", "2"], "ratios": {"0": 0.42, "2": 0.18}},
        {"round": 3, "kept_fraction": 0.4, "params": 400, "geneval": 0.70, "cmmd": 0.31, "clip_score": 25.8,
         "blocks": ["3", "0"], "ratios": {"3": 1.0, "0": 0.3}},
    ]


def heatmap_array(fig):
    return np.ma.filled(fig.axes[0].images[0].get_array().astype(float), NAN)


def test_heatmap_is_blocks_by_rounds_with_removed_blocks_masked_later():
    fig = block_heatmap(rows_3(), BLOCKS)
    assert isinstance(fig, Figure)
    expected = np.array([
        [0.0, 0.42, 0.3],   # block 0: SVD twice
        [1.0, NAN, NAN],    # block 1: removed in round 1, gone afterwards
        [0.0, 0.18, 0.0],   # block 2
        [0.0, 0.0, 1.0],    # block 3: removed in the last round, nothing later to mask
    ])
    np.testing.assert_array_equal(heatmap_array(fig), expected)
    ax = fig.axes[0]
    assert ax.get_title() == "Blocks modified per round"
    assert [t.get_text() for t in ax.get_yticklabels()] == BLOCKS
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["1", "2", "3"]
    # one hatched patch per masked cell, one label per nonzero cell
    gone = [p for p in ax.patches if (p.get_gid() or "").startswith("gone:")]
    assert sorted(p.get_gid() for p in gone) == ["gone:2:1", "gone:3:1"] and all(p.get_hatch() for p in gone)
    assert sorted(t.get_text() for t in ax.texts) == ["0.18", "0.30", "0.42", "removed", "removed"]
    assert fig.axes[1].get_ylabel() == "fraction of the block removed this round"


def test_heatmap_appends_unlisted_blocks_naturally_and_takes_rows_out_of_order():
    rows = list(reversed(rows_3())) + [{"round": 4, "kept_fraction": 0.3, "ratios": {"10": 0.5, "9": 0.25}}]
    fig = block_heatmap(rows, BLOCKS)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == BLOCKS + ["9", "10"]
    arr = heatmap_array(fig)
    assert arr.shape == (6, 4)
    np.testing.assert_array_equal(arr[:, 3], [0.0, NAN, 0.0, NAN, 0.25, 0.5])


def test_heatmap_of_the_teacher_only_still_draws():
    fig = block_heatmap(rows_3()[:1], BLOCKS)
    assert not fig.axes[0].images and "no rounds yet" in [t.get_text() for t in fig.axes[0].texts]


def test_ratio_table_by_round_then_natural_block_order():
    rows = [
        {"round": 2, "ratios": {"single.10": 0.2, "double.2": 0.5, "single.9": 0.1}},
        {"round": 0, "ratios": {}},
        {"round": 1, "ratios": {"10": 1.0, "9": 0.4, "2": 0.3}},
    ]
    assert ratio_table(rows) == [
        {"round": 1, "block": "2", "ratio": 0.3},
        {"round": 1, "block": "9", "ratio": 0.4},
        {"round": 1, "block": "10", "ratio": 1.0},
        {"round": 2, "block": "double.2", "ratio": 0.5},
        {"round": 2, "block": "single.9", "ratio": 0.1},
        {"round": 2, "block": "single.10", "ratio": 0.2},
    ]
    assert ratio_table(rows_3())[0] == {"round": 1, "block": "1", "ratio": 1.0}


def test_quality_curves_lines_are_the_rows_values_with_inverted_kept_axis():
    a, b = rows_3(), rows_3()[:3]
    for row in b:
        row["cmmd"] += 0.05
    fig = quality_curves({"progressive": a, "one_shot": b})
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["GenEval", "CMMD", "CLIP score"]
    for ax, metric in zip(axes, ("geneval", "cmmd", "clip_score")):
        assert len(ax.lines) == 2
        for line, rows in zip(ax.lines, (a, b)):
            assert list(line.get_xdata()) == [r["kept_fraction"] for r in rows]
            assert list(line.get_ydata()) == pytest.approx([r[metric] for r in rows])
        assert ax.xaxis_inverted()
        assert ax.get_xlabel() == "fraction of teacher parameters kept"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["progressive", "one_shot"]
    # one colour per run in every panel
    assert len({ax.lines[0].get_color() for ax in axes}) == 1
    assert axes[0].lines[0].get_color() != axes[0].lines[1].get_color()


def test_quality_curves_skip_missing_points_and_say_not_evaluated():
    rows = rows_3()
    del rows[1]["geneval"]
    rows[2]["geneval"] = None
    rows[3]["clip_score"] = float("nan")
    for row in rows:
        row.pop("cmmd")
    fig = quality_curves({"run": rows})
    geneval, cmmd, clip = fig.axes
    assert list(geneval.lines[0].get_xdata()) == [1.0, 0.4]
    assert list(geneval.lines[0].get_ydata()) == [0.88, 0.70]
    assert list(clip.lines[0].get_xdata()) == [1.0, 0.75, 0.6]
    assert not cmmd.lines
    assert [t.get_text() for t in cmmd.texts] == ["not evaluated"]
    assert cmmd.xaxis_inverted()
    assert not geneval.texts and not clip.texts


def test_write_schedule_plots_writes_pngs_and_round_tripping_json(tmp_path):
    rows = rows_3()
    out = tmp_path / "plots" / "schedule"
    written = write_schedule_plots(rows, BLOCKS, out, name="progressive")
    assert written == [out / "quality.png", out / "blocks.png", out / "rounds.json", out / "ratios.json"]
    for path in written[:2]:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 100
            assert im.info.get("dpi", (120, 120))[0] == pytest.approx(120, abs=1)
    curve = json.loads((out / "rounds.json").read_text())
    assert curve == curve_rows(rows)
    # every row with the same keys (DVC's plots read nothing else), the lists and maps left to ratios.json
    assert len({tuple(r) for r in curve}) == 1 and "ratios" not in curve[0] and "blocks" not in curve[0]
    assert [r["kept_fraction"] for r in curve] == [r["kept_fraction"] for r in rows]
    assert curve[0]["cmmd_before"] is None and curve[1]["cmmd_before"] == rows[1]["cmmd_before"]
    assert json.loads((out / "ratios.json").read_text()) == ratio_table(rows)
    assert (out / "rounds.json").read_text().startswith('[\n {\n  "round": 0')  # indent 1
