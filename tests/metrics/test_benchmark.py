"""The evaluate stage's library: benchmark images rendered resumably per model, then scored.

A tiny shapes world and a tiny zoo (the session's `world` fixture, tests/conftest.py) stand in
for the default run.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from ditcompress.metrics import get_evaluator
from ditcompress.metrics.benchmark import image_path, run_evaluate
from ditcompress.params import parse_params
from ditcompress.utils.digest import model_digest

from ..shrunk import params_with

_params = params_with


def _pixels(folder):
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def test_renders_each_group_then_only_what_is_missing(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    params = _params(raw)
    values = run_evaluate(params, "data/eval")["teacher"]
    folder = root / "data" / "eval" / "teacher"
    counts = {g: len(list((folder / g).glob("*.png"))) for g in ("prompts", "geneval", "dpg")}
    assert counts == {"prompts": 6, "geneval": 6 * 1 * 2, "dpg": 2}
    assert {"cmmd", "clip_score", "geneval/overall", "dpg/overall"} <= set(values)

    # the scores are those of the evaluators on the rendered folders
    ev = get_evaluator("geneval", metadata="data/shapes/eval/geneval_metadata.jsonl", images_per_prompt=2,
                       device="cpu")
    direct = ev.run([np.asarray(Image.open(image_path(folder, "geneval", i)).convert("RGB")) for i in range(12)])
    assert values["geneval/overall"] == pytest.approx(direct["geneval/overall"])

    before = _pixels(folder)
    stamp = {p: os.stat(folder / p).st_mtime_ns for p in before}
    (folder / "geneval" / "00003.png").unlink()
    again = run_evaluate(params, "data/eval")["teacher"]
    after = _pixels(folder)
    assert after.keys() == before.keys()
    rewritten = [p for p in before if os.stat(folder / p).st_mtime_ns != stamp.get(p)]
    assert rewritten == ["geneval/00003.png"]
    assert all(np.array_equal(after[p], before[p]) for p in before if p not in rewritten)
    # the missing image is redrawn alone from its own seed: exactly a batch-of-one render. (Not
    # necessarily the same bytes as in its first batch: on some kernel paths a batch's composition
    # moves the last bits, e.g. ATEN_CPU_CAPABILITY=default.)
    from ditcompress.data.config import for_preset
    from ditcompress.models.presets import get_preset
    from ditcompress.sampling import Renderer, image_seeds

    renderer = Renderer.load("models/shapes/pixart", "pixart", for_preset(params.generate, get_preset("shapes-pixart")))
    alone = renderer.render([ev.items()[3]["prompt"]], image_seeds(params.generate.seed, "geneval", 1, start=3))[0]
    np.testing.assert_array_equal(after["geneval/00003.png"], alone)
    current = ev.run([np.asarray(Image.open(image_path(folder, "geneval", i)).convert("RGB")) for i in range(12)])
    assert again["geneval/overall"] == pytest.approx(current["geneval/overall"])


def test_model_geneval_is_the_evaluate_stage_figure(world, monkeypatch):
    """The in-memory scorer (bench, score stage) renders the evaluate stage's images: same figure,
    and a student swapped into the loaded renderer scores as the stage scores it."""
    from ditcompress.compress import remove_blocks
    from ditcompress.compress.student import save_student
    from ditcompress.data.config import for_preset
    from ditcompress.metrics.benchmark import model_geneval
    from ditcompress.models.presets import get_preset
    from ditcompress.sampling import Renderer

    root, raw = world
    monkeypatch.chdir(root)
    params = _params(raw, evaluate={"metrics": ["geneval"], "students": {"drop0": "students/drop0"}})
    # geneval only: the stage renders the same batches as the scorer, so the pixels match on any CPU
    renderer = Renderer.load("models/shapes/pixart", "pixart", for_preset(params.generate, get_preset("shapes-pixart")))
    student, record = remove_blocks(renderer.pipeline.transformer, ["0"])
    save_student(student, root / "students" / "drop0", record)
    staged = run_evaluate(params, "data/eval_geneval")
    ev = get_evaluator("geneval", metadata="data/shapes/eval/geneval_metadata.jsonl", images_per_prompt=2,
                       device="cpu")
    sizes = ("params", "kept_fraction")  # the stage adds each model's size to its metrics
    scores = {name: {k: v for k, v in values.items() if k not in sizes} for name, values in staged.items()}
    assert model_geneval(renderer, ev, params.generate.seed) == scores["teacher"]
    with renderer.using(student):
        assert model_geneval(renderer, ev, params.generate.seed) == scores["drop0"]
    assert renderer.pipeline.transformer is not student  # restored on exit
    teacher_n = sum(p.numel() for p in renderer.pipeline.transformer.parameters())
    student_n = sum(p.numel() for p in student.parameters())
    assert staged["teacher"]["params"] == teacher_n and staged["teacher"]["kept_fraction"] == 1.0
    assert staged["drop0"]["params"] == student_n < teacher_n
    assert staged["drop0"]["kept_fraction"] == pytest.approx(student_n / teacher_n, rel=1e-12)


def test_other_sampler_settings_render_anew(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    run_evaluate(_params(raw), "data/eval_steps")
    folder = root / "data" / "eval_steps" / "teacher"
    first = _pixels(folder)
    run_evaluate(_params(raw, generate={"num_inference_steps": 2}), "data/eval_steps")
    second = _pixels(folder)
    assert first.keys() == second.keys()
    assert any(not np.array_equal(first[p], second[p]) for p in first)
    assert json.loads((folder / "settings.json").read_text())["sampler"]["num_inference_steps"] == 2


def test_students_render_in_the_teacher_pipeline(world, monkeypatch):
    from ditcompress.compress import remove_blocks
    from ditcompress.compress.student import save_student
    from ditcompress.models.registry import get_adapter

    root, raw = world
    monkeypatch.chdir(root)
    adapter = get_adapter("pixart")
    teacher = adapter.load_pipeline("models/shapes/pixart").transformer
    student, record = remove_blocks(teacher, ["1"])
    save_student(student, root / "students" / "drop1", record)
    params = _params(raw, evaluate={"students": {"drop1": "students/drop1"}, "metrics": ["geneval"]})
    results = run_evaluate(params, "data/eval_students")
    assert set(results) == {"teacher", "drop1"}
    t, s = (_pixels(root / "data" / "eval_students" / m) for m in ("teacher", "drop1"))
    assert t.keys() == s.keys() and any(not np.array_equal(t[p], s[p]) for p in t)


def test_model_digest_follows_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "w.safetensors").write_bytes(b"1234")
    first = model_digest(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"1235")
    assert model_digest(tmp_path) != first
    assert model_digest("org/model") == "org/model"


def test_bad_student_name_is_one_line_error():
    from ditcompress.params import ParamsError

    with pytest.raises(ParamsError, match=r"^params.yaml: evaluate.students: .*'teacher'"):
        parse_params({"evaluate": {"students": {"teacher": "x"}}})
