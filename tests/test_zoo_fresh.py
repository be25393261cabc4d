"""The trained shapes zoo committed in `models/shapes` is the output of its dvc.lock entry.

A fresh clone's `make repro` must start after `pretrain` (an hour on 2 cores). It does only if
`shapes_data` regenerates `data/shapes` byte for byte and nothing `pretrain` depends on (its code,
params, the dataset, the committed zoo itself) differs from what dvc.lock recorded. This test
checks both in a copy of the working tree, so a change to pretrain's code that is not followed
by `dvc repro -f pretrain` (or, when it cannot alter the zoo, `dvc commit pretrain`) fails here.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tree_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the working tree (what a commit would hold)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_committed_zoo_is_what_dvc_lock_says(tmp_path):
    repo = tmp_path / "repo"
    for name in _tree_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    lock = (repo / "dvc.lock").read_text()

    made = _dvc(["repro", "shapes_data"], repo)
    assert made.returncode == 0, made.stderr[-2000:]
    assert (repo / "dvc.lock").read_text() == lock, "shapes_data did not regenerate data/shapes byte for byte"

    status = _dvc(["status", "--json", "shapes_data", "pretrain"], repo)
    assert status.returncode == 0, status.stderr[-2000:]
    stale = json.loads(status.stdout or "{}")
    assert stale == {}, (f"pretrain is stale against dvc.lock: {stale}. Rebuild the zoo (dvc repro -f pretrain, "
                         "~1 h on 2 cores) or, if the change cannot alter it, `dvc commit pretrain`")
