"""End to end: the real dvc.yaml on a shrunken shapes world, in a throw-away git repository.

Checks what a user relies on: `dvc repro` runs and is then up to date; `dvc exp run -S` and
queued experiments (a study: `dvc exp run --queue` + `dvc queue start`) log MLflow runs tagged with
the experiment name into the store at the repository root.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from PIL import Image

from .shrunk import REPO, shrunk_params

STAGES = ("shapes_data", "pretrain", "caption", "generate", "evaluate", "score", "compress", "distill", "schedule")


def _run(args: list[str], cwd: Path, env: dict) -> str:
    """Run a command, fail the test with its output if it fails."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC repository holding the real pipeline files and shrunken params."""
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    for name in ("stages", "src"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "params.yaml").write_text(yaml.safe_dump(shrunk_params(), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        _run(cmd, root, env)
    return root, env


def _stage_runs(root: Path) -> list:
    """All per-stage MLflow runs in the repository-root store."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ditcompress")
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("ditcompress.role") == "stage"]


def _check_generate(root: Path, metrics: dict) -> None:
    """40 images of distinct captions, each with its own caption, and one regenerates to the same pixels."""
    from ditcompress.data import read_captions, regenerate
    from ditcompress.data.dataset import TeacherDataset

    data, captions = TeacherDataset(root / "data" / "teacher"), read_captions(root / "data" / "captions")
    records = [data.record(i) for i in range(len(data))]
    assert metrics["images"] == len(data) == 40 and len({r["id"] for r in records}) == 40
    assert all(r["prompt"] == captions[r["id"]] for r in records)
    np.testing.assert_array_equal(np.asarray(regenerate(records[0], root / "models" / "shapes" / "pixart")),
                                  np.asarray(data[0]["image"]))


def _check_evaluate(root: Path, metrics: dict) -> None:
    """The stage's teacher figures, recomputed in this process from the files the pipeline left."""
    from ditcompress.metrics.benchmark import PROMPTS_GROUP, image_path, load_reference, run_evaluate
    from ditcompress.metrics.clip import load_clip
    from ditcompress.metrics.cmmd import cmmd
    from ditcompress.params import load_params
    from ditcompress.shapes.prompts import GENEVAL_TAGS

    teacher = metrics["teacher"]
    # GenEval's overall score is the mean of its six tasks
    assert teacher["geneval/overall"] == pytest.approx(np.mean([teacher[f"geneval/{t}"] for t in GENEVAL_TAGS]))
    # CMMD from scratch: the shapes CLIP's embeddings of the images rendered from the reference
    # captions against those of the reference images (tolerance: CLIP's float32 sums)
    reference = load_reference(root / "data" / "shapes" / "reference")
    rendered = [np.asarray(Image.open(image_path(root / "data" / "eval" / "teacher", PROMPTS_GROUP, i)).convert("RGB"))
                for i in range(len(reference))]
    clip = load_clip(root / "models" / "shapes" / "clip", "cpu")
    expected = cmmd(clip.embed_images(rendered, "cmmd"), clip.embed_images(list(reference.images), "cmmd"))
    assert teacher["cmmd"] == pytest.approx(expected, rel=1e-4) and expected > 0
    # every figure: the library scores the rendered images (all on disk, nothing is rendered) alike
    cwd = os.getcwd()
    os.chdir(root)  # params.yaml's paths are relative to the repository
    try:
        again = run_evaluate(load_params("params.yaml"), "data/eval")
    finally:
        os.chdir(cwd)
    assert again.keys() == metrics.keys() and again["teacher"].keys() == teacher.keys()
    for name, value in teacher.items():
        assert again["teacher"][name] == pytest.approx(value, rel=1e-4, abs=1e-9), name


def _check_score(root: Path, env: dict) -> None:
    """The selection is the block with the lowest rank sum, and `dvc plots show` renders the figures."""
    imp = json.loads((root / "data" / "score" / "importance.json").read_text())
    sel = json.loads((root / "data" / "score" / "selection.json").read_text())
    ranks = imp["criteria"]["rank_sum"]
    assert sel["blocks"] == [min(imp["blocks"], key=lambda b: (ranks[b], b))]
    assert set(imp["spearman"]) >= {"magnitude", "cka", "cmmd", "clip_score", "rank_sum"}
    out = _run(["dvc", "plots", "show", "--json"], root, env)
    shown = json.loads(out[out.index("{"):])["data"]
    assert any(k.endswith("strip_remove.png") for k in shown) and "Weight magnitude (eq 4.2)" in shown
    # compress builds the student of that selection: its figures are the selection's
    compressed = json.loads((root / "metrics" / "compress.json").read_text())
    assert compressed["cmmd"] == pytest.approx(sel["cmmd"], rel=1e-9) and compressed["blocks"] == len(sel["blocks"])


@pytest.mark.slow
def test_repro_then_up_to_date(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    assert "up to date" in _run(["dvc", "repro"], root, env).lower()
    for stage in STAGES:
        assert (root / "metrics" / f"{stage}.json").is_file(), stage
    _check_generate(root, json.loads((root / "metrics" / "generate.json").read_text()))
    _check_evaluate(root, json.loads((root / "metrics" / "evaluate.json").read_text()))
    _check_score(root, env)
    # evaluate scores the students of compress and distill next to the teacher, with their sizes
    models = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert set(models) == {"teacher", "compressed", "distilled"}
    assert models["teacher"]["kept_fraction"] == 1.0
    assert models["distilled"]["params"] == models["compressed"]["params"] < models["teacher"]["params"]
    assert models["distilled"]["kept_fraction"] == pytest.approx(models["distilled"]["params"] / models["teacher"]["params"])
    assert json.loads((root / "metrics" / "distill.json").read_text())["steps"] == 7
    assert (root / "plots" / "distill" / "samples.png").is_file()
    runs = {r.data.tags["stage"]: r for r in _stage_runs(root)}
    assert all(r.data.tags["dvc.exp_name"] == "workspace" for r in runs.values()) and set(runs) == set(STAGES)
    assert "pretrain.pixart.steps" not in runs["generate"].data.params  # a stage logs its own section only
    _check_schedule(root, env)


def _check_schedule(root: Path, env: dict) -> None:
    """One progressive round: its student, its row and figures, and its MLflow run under the stage's."""
    from ditcompress.compress.student import load_student

    summary = json.loads((root / "metrics" / "schedule.json").read_text())
    rows = json.loads((root / "plots" / "schedule" / "rounds.json").read_text())
    student = load_student(root / "models" / "students" / "schedule" / "round-1")
    teacher_params = rows[0]["params"]
    assert summary["rounds"] == 1 and [r["round"] for r in rows] == [0, 1] and summary["steps"] == 3
    assert rows[1]["params"] == sum(p.numel() for p in student.parameters()) == summary["params"]
    assert summary["kept_fraction"] == rows[1]["kept_fraction"] == rows[1]["params"] / teacher_params <= 0.8
    assert {"geneval", "cmmd", "clip_score"} <= rows[1].keys()
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ditcompress")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (stage,) = [r for r in _stage_runs(root) if r.data.tags["stage"] == "schedule"]
    (child,) = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{stage.info.run_id}'")
    assert child.info.run_name == "round-1" and child.data.metrics["kept_fraction"] == summary["kept_fraction"]
    out = _run(["dvc", "plots", "show", "--json"], root, env)
    shown = json.loads(out[out.index("{"):])["data"]
    assert "GenEval against the fraction of teacher parameters kept" in shown


@pytest.mark.slow
def test_experiments_log_to_root_store_with_names(project):
    """`dvc exp run -S` tags the runs of the stages it reruns with the experiment's name (queued experiments:
    the study test below)."""
    root, env = project
    _run(["dvc", "exp", "run", "-n", "direct-exp", "-S", "distill.seed=1"], root, env)
    runs = {r.data.tags["stage"]: r for r in _stage_runs(root) if r.data.tags["dvc.exp_name"] == "direct-exp"}
    assert set(runs) == {"distill", "evaluate", "schedule"}  # what reads distill.*; the rest is unchanged
    assert runs["distill"].data.params["distill.seed"] == "1"
    assert "direct-exp" in _run(["dvc", "exp", "show", "--csv"], root, env)


@pytest.mark.slow
def test_a_study_queues_its_experiments_and_reports_them(project):
    from ditcompress.study import dvc_exp_show, finished_experiments, metric

    root, env = project
    (root / "studies.yaml").write_text(
        "kd:\n  thesis: fig 5.11\n  about: two losses\n  grid: {distill.loss: [out, standard]}\n"
        "  seed_key: distill.seed\n  stages: [evaluate]\n  report:\n    metrics: [evaluate.json:distilled.geneval/overall, "
        "evaluate.json:distilled.cmmd]\n")
    _run(["ditcompress", "study", "kd", "--file", "studies.yaml", "--jobs", "1"], root, env)
    deadline = time.time() + 600
    while time.time() < deadline:
        lines = [line for line in _run(["dvc", "queue", "status"], root, env).splitlines() if " kd-" in line]
        if len(lines) == 2 and all("Success" in line or "Failed" in line for line in lines):
            break
        time.sleep(3)
    assert all("Success" in line for line in lines), lines
    # the target stops at evaluate: the schedule stage, which also reads distill.*, did not rerun
    ran = {r.data.tags["stage"] for r in _stage_runs(root) if r.data.tags["dvc.exp_name"] == "kd-out-s0"}
    assert {"distill", "evaluate"} <= ran and "schedule" not in ran, ran
    distill = next(r for r in _stage_runs(root) if r.data.tags["dvc.exp_name"] == "kd-out-s0"
                   and r.data.tags["stage"] == "distill")
    assert distill.data.params["distill.loss"] == "out"  # the queued experiment's -S reached the stage
    _run(["ditcompress", "report", "kd", "--file", "studies.yaml", "--out", "results"], root, env)
    exps = finished_experiments(dvc_exp_show(root), "kd-")
    assert set(exps) == {"kd-out-s0", "kd-standard-s0"}
    md = (root / "results" / "kd.md").read_text()
    for label in ("out", "standard"):
        m = exps[f"kd-{label}-s0"]["metrics"]
        cells = [f"{metric(m, c):.4g}" for c in ("evaluate.json:distilled.geneval/overall", "evaluate.json:distilled.cmmd")]
        assert f"| {label} | 1 | {' | '.join(cells)} |" in md
    assert (root / "results" / "kd.png").stat().st_size > 0
