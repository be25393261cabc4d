"""Shared test setup: offline, deterministic, and an isolated MLflow store per test session."""

import os
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A throw-away sqlite MLflow store, set through the same env var users set."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
