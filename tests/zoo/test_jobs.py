"""The pretrain job pool: results, forwarded step metrics, failures that stop the other jobs."""

import importlib
import os
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import torch
from torch import nn

from ditcompress.zoo.jobs import JobPool, load_weights, weights_to_bytes

from .conftest import Recorder


@pytest.fixture
def jobs(monkeypatch):
    """The job functions, importable by worker processes (which get this process's sys.path)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    return importlib.import_module("pool_jobs")


@pytest.mark.parametrize("workers,threads", [(1, 1), (2, 2), (2, 1)])
def test_results_and_step_metrics_reach_the_parent(jobs, workers, threads):
    recorder = Recorder()
    with JobPool(workers, threads, recorder) as pool:
        jobs = [pool.submit(jobs.square_job, x) for x in (3, 4)]
        results = [pool.result(job) for job in jobs]
    assert [r[0] for r in results] == [9, 16]
    assert {r[2] for r in results} == {max(1, threads // workers)}
    # one worker runs in this process; several run elsewhere
    assert ({r[1] for r in results} == {os.getpid()}) == (workers == 1)
    assert sorted((s, m["job/value"]) for s, m in recorder.metrics) == [(0, 0.0), (0, 0.0), (1, 3.0), (1, 4.0)]


def test_a_failing_job_raises_in_the_parent_and_stops_the_others(jobs):
    with pytest.raises(ValueError, match="bad job"):
        with JobPool(2, 2) as pool:
            sleeper = pool.submit(jobs.sleeping_job, 600)
            pool.result(pool.submit(jobs.failing_job))
    # leaving the pool terminated the sleeper instead of waiting ten minutes for it
    assert isinstance(sleeper.exception(timeout=0), BrokenProcessPool)


def test_weights_travel_as_safetensors_bytes():
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    assert isinstance(weights_to_bytes(a), bytes)
    load_weights(b, weights_to_bytes(a))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not b.training


def test_bad_pool_sizes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^workers and threads must be >= 1, got workers=0, threads=2$"):
        JobPool(0, 2)
