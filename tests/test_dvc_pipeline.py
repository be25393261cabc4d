"""End to end: the real dvc.yaml on a shrunken shapes world, in a throw-away git repository.

Checks what a user relies on: `dvc repro` runs and is then up to date; `dvc exp run -S` and
queued experiments (`dvc exp run --queue` + `dvc queue start`) log MLflow runs tagged with the
experiment name into the store at the repository root.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# The shipped params, shrunk so the whole pipeline runs in seconds (same code path): a tiny
# dataset, a zoo of one- and two-block models trained for a few steps, 40 generated images.
SHRINK = {
    "data": {"n_train": 64, "n_reference": 8, "prompts_per_task": 2, "dpg_prompts": 2},
    "pretrain": {
        "threads": 1,
        "text": {"width": 16, "heads": 2, "layers": 1},
        "vae": {"channels": [8, 8], "norm_groups": 4, "steps": 4, "batch_size": 8},
        "clip": {"width": 16, "heads": 2, "layers": 1, "projection_dim": 16, "steps": 4, "batch_size": 16,
                 "warmup_steps": 1},
        "pixart": {"layers": 2, "heads": 2, "head_dim": 8, "steps": 4, "batch_size": 8, "warmup_steps": 1},
        "flux": {"double_layers": 1, "single_layers": 1, "heads": 2, "head_dim": 8, "axes_dims_rope": [2, 2, 4],
                 "steps": 4, "batch_size": 8, "warmup_steps": 1},
        "grid_prompts_per_task": 1,
    },
    "caption": {"shard_size": 16},
    "generate": {"num_images": 40, "num_inference_steps": 4, "shard_size": 16, "batch_size": 8},
    "evaluate": {"geneval": {"images_per_prompt": 1}},
}
STAGES = ("shapes_data", "pretrain", "caption", "generate", "evaluate")


def _merge(base: dict, over: dict) -> dict:
    """Recursive dict update (returns a new dict)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


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
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), SHRINK)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
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


@pytest.mark.slow
def test_repro_then_up_to_date(project):
    root, env = project
    _run(["dvc", "repro"], root, env)
    assert "up to date" in _run(["dvc", "repro"], root, env).lower()
    for stage in STAGES:
        assert (root / "metrics" / f"{stage}.json").is_file(), stage
    evaluate = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert 0.0 <= evaluate["teacher"]["geneval/overall"] <= 1.0
    assert evaluate["teacher"]["cmmd"] > 0
    generate = json.loads((root / "metrics" / "generate.json").read_text())
    assert generate["images"] == 40
    assert all(r.data.tags["dvc.exp_name"] == "workspace" for r in _stage_runs(root))


@pytest.mark.slow
def test_experiments_log_to_root_store_with_names(project):
    root, env = project
    _run(["dvc", "exp", "run", "-n", "direct-exp", "-S", "data.n_train=80"], root, env)
    _run(["dvc", "exp", "run", "--queue", "-n", "queued-exp", "-S", "seed=1"], root, env)
    _run(["dvc", "queue", "start"], root, env)
    deadline = time.time() + 600
    while time.time() < deadline:
        status = _run(["dvc", "queue", "status"], root, env)
        if "Success" in status or "Failed" in status:
            break
        time.sleep(3)
    assert "Success" in status, status
    by_exp = {}
    for run in _stage_runs(root):
        by_exp.setdefault(run.data.tags["dvc.exp_name"], []).append(run)
    assert {"direct-exp", "queued-exp"} <= set(by_exp)
    stages = {name: {r.data.tags["stage"]: r for r in runs} for name, runs in by_exp.items()}
    assert set(STAGES) <= set(stages["direct-exp"]) and set(STAGES) <= set(stages["queued-exp"])
    assert stages["direct-exp"]["shapes_data"].data.params["data.n_train"] == "80"
    assert stages["queued-exp"]["pretrain"].data.params["seed"] == "1"
    # a stage logs its own section only
    assert "pretrain.pixart.steps" not in stages["direct-exp"]["generate"].data.params
    assert "queued-exp" in _run(["dvc", "exp", "show", "--csv"], root, env)
