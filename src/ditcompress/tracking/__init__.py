"""MLflow + DVC glue: one MLflow run per stage, nested under one parent per DVC experiment."""

from ditcompress.tracking.mlflow_run import StageRun, repo_root, stage_run, tracking_uri

__all__ = ["StageRun", "repo_root", "stage_run", "tracking_uri"]
