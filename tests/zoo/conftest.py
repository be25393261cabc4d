"""The pretrain config shrunk to test size (same code path), and a tiny shapes dataset to train on."""

import pytest

from ditcompress.params import parse_params
from ditcompress.shapes.dataset import build_dataset
from ditcompress.zoo.config import PretrainConfig

from ..shrunk import shrunk_params
from ..threads import torch_threads

# on top of the shared shrink: the smallest image size the world allows (nothing here samples
# through a 32 px preset), and the components trained in this process
# (test_same_seed_same_zoo_whatever_the_schedule also uses two processes)
ZOO = {"data": {"image_size": 24}, "pretrain": {"workers": 1}}


def shrink(**overrides) -> PretrainConfig:
    """The shipped pretrain config shrunk for the zoo's tests, then `overrides` (section -> dict of fields)."""
    return parse_params(shrunk_params({**ZOO, "pretrain": {**ZOO["pretrain"], **overrides}})).pretrain


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
    """The shrunken shapes dataset (24 px), built once per session with the shipped seed."""
    out = tmp_path_factory.mktemp("zoo_shapes") / "data"
    params = parse_params(shrunk_params(ZOO))
    build_dataset(params.data, params.seed, out, progress=False)
    return out


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny ops spin-wait badly on a busy 2-core machine (results are per-thread-count)."""
    with torch_threads(1):
        yield
