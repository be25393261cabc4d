"""The pretrain config shrunk to test size (same code path), and a tiny shapes dataset to train on."""

import pytest
import torch

from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.dataset import build_dataset
from ditcompress.zoo.config import PretrainConfig

# only sizes and step counts change; every architectural switch stays as in the default config
TINY = {
    "threads": 1,
    "workers": 1,  # in this process; test_same_seed_same_zoo_whatever_the_schedule also uses two processes
    "text": {"width": 16, "heads": 2, "layers": 1},
    "vae": {"channels": (8, 8, 8), "norm_groups": 4, "steps": 8, "batch_size": 8},
    "clip": {"width": 16, "heads": 2, "layers": 1, "projection_dim": 16, "steps": 8, "batch_size": 16, "warmup_steps": 2},
    "pixart": {"layers": 2, "heads": 2, "head_dim": 8, "steps": 6, "batch_size": 8, "warmup_steps": 2},
    "flux": {"double_layers": 1, "single_layers": 1, "heads": 2, "head_dim": 8, "axes_dims_rope": (2, 2, 4),
             "steps": 6, "batch_size": 8, "warmup_steps": 2},
    "grid_prompts_per_task": 1,
}
TINY_DATA = dict(image_size=24, n_train=96, n_reference=4, prompts_per_task=2, dpg_prompts=2)


def shrink(**overrides) -> PretrainConfig:
    """The default `PretrainConfig` with the TINY sizes, then `overrides` (section -> dict of fields)."""
    raw = PretrainConfig().model_dump()
    for section, values in {**TINY, **overrides}.items():
        if isinstance(values, dict):
            raw[section] = {**raw[section], **TINY.get(section, {}), **values}
        else:
            raw[section] = values
    return PretrainConfig.model_validate(raw)


class Recorder:
    """Tracker stand-in that keeps what it is given."""

    def __init__(self):
        self.metrics, self.images = [], {}

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_image(self, image, name):
        self.images[name] = image


@pytest.fixture
def tiny_cfg() -> PretrainConfig:
    """The shrunken pretrain config."""
    return shrink()


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """A tiny shapes dataset (24 px) built once per session with seed 0."""
    out = tmp_path_factory.mktemp("zoo_shapes") / "data"
    build_dataset(ShapesDataConfig(**TINY_DATA), 0, out, progress=False)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny ops spin-wait badly on a busy 2-core machine (results are per-thread-count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
