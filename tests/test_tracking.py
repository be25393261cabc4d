"""MLflow glue: one run per stage under one parent per pipeline, tags, params, DVC metrics file."""

import json
from pathlib import Path

import mlflow

from ditcompress.params import parse_params
from ditcompress.tracking import repo_root, stage_run, tracking_uri


def test_tracking_uri_defaults_to_absolute_repo_store(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    # an executor copy of the repo inside .dvc/tmp/exps resolves to the real repository
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12"))
    assert repo_root() == tmp_path.resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking_uri() == "sqlite:////elsewhere.db"


def test_stage_runs_nest_under_one_parent_with_tags(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-lime")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    params = parse_params({"seed": 3, "data": {"image_size": 24}})
    for stage in ("first", "second"):
        with stage_run(stage, params, sections=["data"], metrics_dir=tmp_path / "metrics") as run:
            run.log_metrics({"loss": 2.0}, step=0)
            run.log_metrics({"loss": 1.0}, step=1)
            run.log_metrics({"acc": 0.5, "per_task": {"colors": 0.25}, "note": "text"})

    client = mlflow.MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("ditcompress")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ditcompress.role") == "pipeline"]
    stages = [r for r in runs if r.data.tags.get("ditcompress.role") == "stage"]
    assert len(parents) == 1 and len(stages) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in stages} == {parents[0].info.run_id}
    for r in stages:
        assert r.data.tags["dvc.exp_name"] == "lucky-lime"
        assert r.data.tags["dvc.baseline_rev"] == "abc123"
        assert r.data.tags["stage"] in {"first", "second"}
        assert r.data.params["seed"] == "3" and r.data.params["data.image_size"] == "24"
        assert "tracking.experiment" not in r.data.params  # only the stage's own sections
        assert r.data.metrics == {"loss": 1.0, "acc": 0.5, "per_task.colors": 0.25}
    history = client.get_metric_history(stages[0].info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 1.0)]
    summary = json.loads(Path(tmp_path / "metrics" / "first.json").read_text())
    assert summary == {"acc": 0.5, "per_task": {"colors": 0.25}, "note": "text"}


def test_round_runs_nest_under_their_stage_and_the_experiment_opens_on_its_runs(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "oneshot-2")
    params = parse_params({})
    with stage_run("schedule", params, metrics_dir=tmp_path / "metrics") as run:
        for k in (1, 2):
            with run.child(f"round-{k}", {"schedule.kind": "progressive"}) as rnd:
                rnd.log_metrics({"kept_fraction": 1 - 0.1 * k})
        run.log_metrics({"rounds": 2})
    client = mlflow.MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("ditcompress")
    # mlflow ui 3.x opens an experiment without a kind on its GenAI overview
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    (stage,) = [r for r in runs if r.data.tags.get("ditcompress.role") == "stage"]
    rounds = sorted((r for r in runs if r.data.tags.get("ditcompress.role") == "round"), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in rounds] == ["round-1", "round-2"]
    assert all(r.data.tags["mlflow.parentRunId"] == stage.info.run_id for r in rounds)
    assert [r.data.metrics for r in rounds] == [{"kept_fraction": 0.9}, {"kept_fraction": 0.8}]
    assert all(r.data.tags["schedule.kind"] == "progressive" for r in rounds)
    assert all(r.data.tags["dvc.exp_name"] == "oneshot-2" for r in rounds)  # to group rounds by experiment
    assert stage.data.metrics == {"rounds": 2}  # what a round logs stays in its run


def test_non_main_rank_logs_nothing(mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with stage_run("x", parse_params({}), metrics_dir=tmp_path) as run:
        run.log_metrics({"a": 1.0})
        assert not run.active
    assert not (tmp_path / "x.json").exists()
    assert mlflow.MlflowClient(mlflow_uri).get_experiment_by_name("ditcompress") is None
