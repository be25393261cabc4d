"""GenEval and DPG-Bench scoring on ground-truth shapes renders with the exact shapes detector.

Renders that satisfy their captions by construction must score (almost) perfectly; the same
renders scored against other captions must not. This ties the metrics to the shapes world's
prompt metadata, question file and detector.
"""

import json

import numpy as np
import pytest

from ditcompress.metrics import get_evaluator
from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.dataset import geneval_prompts
from ditcompress.shapes.dpg import dpg_items, write_dpg_csv
from ditcompress.shapes.render import render_scenes
from ditcompress.shapes.scene import sample_scene

CFG = ShapesDataConfig(image_size=64, prompts_per_task=3)


def renders(items, seed=0):
    """Ground-truth renders of scenes sampled for the items."""
    rng = np.random.default_rng(seed)
    return render_scenes([sample_scene(it, rng, CFG.image_size, CFG.colors) for it in items], CFG.image_size)


def test_geneval_on_shapes_renders(tmp_path):
    path = tmp_path / "geneval_metadata.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in geneval_prompts(CFG, seed=0)))
    ev = get_evaluator("geneval", metadata=str(path), images_per_prompt=1, detector="shapes", device="cpu")
    items = ev.items()
    good = ev.run(renders(items), set_id="truth")
    assert good["geneval/overall"] >= 0.95, good
    shuffled = ev.run(renders(items[::-1]), set_id="shuffled")  # images of other captions
    assert shuffled["geneval/overall"] < good["geneval/overall"] - 0.3


def test_dpg_on_shapes_renders(tmp_path):
    items = dpg_items(8, np.random.default_rng(0), CFG.shapes, CFG.colors)
    path = tmp_path / "dpg_questions.csv"
    write_dpg_csv(path, items, [f"shapes_{i:03d}" for i in range(len(items))])
    ev = get_evaluator("dpg", questions=str(path), vqa="shapes", device="cpu")
    good = ev.run(renders(items))
    assert good["dpg/overall"] == pytest.approx(100.0, abs=5.0), good
    assert ev.run(renders(items[1:] + items[:1]))["dpg/overall"] < good["dpg/overall"] - 20
