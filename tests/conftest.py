"""Shared test setup: offline, deterministic, an isolated MLflow store per test, `gpu` tests skipped without
CUDA, and one tiny shapes world with its zoo for the stages' library tests."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked `gpu` when torch sees no CUDA device (CPU machines, CI)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    """A throw-away sqlite MLflow store, set through the same env var users set."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """(repo-like root with data/shapes and models/shapes, raw params) built once per session.

    A tiny shapes world and a tiny zoo (one- and two-block models trained for a few steps, saved in
    the hub layout by the real pretrain code); tests write their outputs into their own folders.
    """
    import torch

    from ditcompress.params import parse_params
    from ditcompress.shapes.dataset import build_dataset
    from ditcompress.zoo.pretrain import run_pretrain

    from .shrunk import WORLD
    from .threads import torch_threads

    root = tmp_path_factory.mktemp("world")
    params = parse_params(WORLD)
    build_dataset(params.data, 0, root / "data" / "shapes", progress=False)
    with torch_threads(torch.get_num_threads()):  # the stage's pool sets its own count
        run_pretrain(params.pretrain, root / "data" / "shapes", root / "models" / "shapes", 0)
    raw = {
        "data": WORLD["data"],
        "generate": {"num_inference_steps": 3, "batch_size": 5},
        "evaluate": {"metrics": ["cmmd", "clip_score", "geneval", "dpg"], "device": "cpu",
                     "clip_path": "models/shapes/clip", "geneval": {"images_per_prompt": 2}},
    }
    return root, raw


@pytest.fixture(scope="session")
def teacher_set(world):
    """The world's caption and generate stages' outputs (8 teacher images): `distill.laion` / `distill.domain`."""
    from ditcompress.data.caption import run_caption
    from ditcompress.data.config import for_preset
    from ditcompress.data.generate import run_generate
    from ditcompress.models.presets import get_preset

    from .shrunk import params_with

    root, raw = world
    params = params_with(raw)
    run_caption(params.caption.model_copy(update={"shard_size": 16, "captioner": "scene"}),
                root / "data" / "shapes" / "train", root / "data" / "captions_set")
    gen = for_preset(params.generate.model_copy(update={"num_images": 8, "shard_size": 4}), get_preset("shapes-pixart"))
    run_generate(gen, root / "data" / "captions_set", root / "models" / "shapes" / "pixart", "pixart",
                 root / "data" / "teacher_set")
    return {"laion": "data/captions_set", "domain": "data/teacher_set"}
