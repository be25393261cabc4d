"""Open one MLflow run per DVC stage and mirror its summary metrics into `metrics/<stage>.json`.

Why the care with paths: `dvc exp run --temp` and queued experiments execute in a copy of the
repository under `<repo>/.dvc/tmp/exps/...`. A relative tracking URI would put their runs in that
throw-away copy, so the store is always `sqlite:///<real repo root>/mlflow.db`, unless
`MLFLOW_TRACKING_URI` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ditcompress.params import Params, flatten
from ditcompress.utils.logging import get_logger, is_main_process

log = get_logger(__name__)

PIPELINE_TAG = "ditcompress.pipeline"
ROLE_TAG = "ditcompress.role"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def repo_root() -> Path:
    """The real repository root, also from inside a DVC temp/queue executor workspace."""
    root = Path(os.environ.get("DVC_ROOT") or _git(["rev-parse", "--show-toplevel"]) or os.getcwd())
    root = root.resolve()
    parts = root.parts
    # <repo>/.dvc/tmp/exps/<...>: executor copies live inside the repository they came from
    for i in range(len(parts) - 2):
        if parts[i] == ".dvc" and parts[i + 1] == "tmp" and parts[i + 2] == "exps":
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else an absolute sqlite store at the repository root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def _git(args: list[str], cwd: str | Path | None = None) -> str | None:
    """Output of a git command, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _dvc_tags() -> dict[str, str]:
    """Tags that tie a run to its DVC experiment and code version."""
    commit = _git(["rev-parse", "HEAD"]) or "unknown"
    return {
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", "workspace"),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", commit),
        "git.commit": commit,
    }


def _pipeline_key(params: Params) -> str:
    """Identity of one pipeline execution: the DVC experiment, or workspace + commit + params."""
    if os.environ.get("DVC_EXP_NAME"):
        return f"exp:{os.environ['DVC_EXP_NAME']}"
    digest = hashlib.sha1(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]
    commit = (_git(["rev-parse", "--short", "HEAD"]) or "nogit")
    return f"workspace:{commit}:{digest}"


class StageRun:
    """Handle a stage logs through; summary metrics end up in MLflow and `metrics/<stage>.json`."""

    def __init__(self, stage: str, run_id: str | None, metrics_path: Path | None, tags: dict[str, str] | None = None):
        self.stage = stage
        self.run_id = run_id
        self.metrics_path = metrics_path
        self.tags = dict(tags or {})  # the DVC experiment's, handed on to nested runs
        self.summary: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        """False on non-main processes, which log nothing."""
        return self.run_id is not None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log values; without a step they are also the stage's summary (DVC metrics file)."""
        if step is None:
            self.summary.update(metrics)
        if self.active:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in _flat_numbers(metrics).items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Attach a file (sample grid, plot, JSON) to the run."""
        if self.active:
            import mlflow

            mlflow.log_artifact(str(path), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        """Attach a JSON/YAML-serialisable object as an artifact file."""
        if self.active:
            import mlflow

            mlflow.log_dict(obj, name)

    def log_table(self, rows: list[dict], name: str) -> None:
        """Attach rows (one dict each) as an MLflow table, browsable and comparable in the UI."""
        if self.active and rows:
            import mlflow

            columns = list(dict.fromkeys(k for row in rows for k in row))
            mlflow.log_table({c: [_cell(row.get(c)) for row in rows] for c in columns}, name)

    def log_image(self, image, name: str) -> None:
        """Attach a PIL image (e.g. a sample grid) as a PNG artifact."""
        if self.active:
            import mlflow

            mlflow.log_image(image, name)

    @contextmanager
    def child(self, name: str, tags: dict[str, str] | None = None) -> Iterator["StageRun"]:
        """A run nested under this one (a schedule's round); what is logged inside the block goes there."""
        if not self.active:
            yield StageRun(name, None, None)
            return
        import mlflow

        tags = {**self.tags, **(tags or {}), ROLE_TAG: "round", "stage": self.stage}
        with mlflow.start_run(run_name=name, nested=True, tags=tags) as run:
            yield StageRun(self.stage, run.info.run_id, None, self.tags)

    def write_metrics_file(self) -> None:
        """Write the summary metrics as the stage's DVC metrics file."""
        if self.metrics_path is not None and is_main_process():
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            self.metrics_path.write_text(json.dumps(self.summary, indent=2, sort_keys=True) + "\n")


def _cell(value):
    """A table cell: lists (block ids) as one comma-separated string."""
    return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _flat_numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Nested metric dicts as `a.b` keys; non-numbers dropped (they stay in the JSON file)."""
    return {k: v for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _parent_run_id(client, experiment_id: str, key: str, tags: dict[str, str]) -> str:
    """Find or create the pipeline-level parent run for this DVC experiment."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PIPELINE_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'pipeline'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    name = os.environ.get("DVC_EXP_NAME") or "workspace"
    run = client.create_run(experiment_id, run_name=name, tags={**tags, PIPELINE_TAG: key, ROLE_TAG: "pipeline"})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@contextmanager
def stage_run(stage: str, params: Params, sections: Sequence[str] = (),
              metrics_dir: str | Path | None = "metrics") -> Iterator[StageRun]:
    """Open the MLflow run of one stage, log its params and tags, write the DVC metrics file at the end.

    Only the stage's own `sections` of params.yaml (plus the shared `seed` and `model`) are logged.
    """
    metrics_path = Path(metrics_dir) / f"{stage}.json" if metrics_dir is not None else None
    if not is_main_process():
        handle = StageRun(stage, None, None)
        yield handle
        return

    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(params.tracking.experiment)
    client = mlflow.MlflowClient()
    if experiment.tags.get(KIND_TAG) != KIND:
        # without a kind, mlflow ui (3.x) opens the experiment on its GenAI overview, not the runs table
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
    tags = _dvc_tags()
    parent = _parent_run_id(client, experiment.experiment_id, _pipeline_key(params), tags)
    with mlflow.start_run(run_name=stage, parent_run_id=parent, tags={**tags, "stage": stage, ROLE_TAG: "stage"}) as run:
        dumped = params.model_dump(mode="json")
        mlflow.log_params(flatten({k: dumped[k] for k in ("seed", "model", *sections)}))
        handle = StageRun(stage, run.info.run_id, metrics_path, tags)
        log.info("stage %s: MLflow run %s in %s", stage, run.info.run_id, tracking_uri())
        yield handle
        handle.write_metrics_file()
