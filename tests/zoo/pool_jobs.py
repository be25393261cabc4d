"""Jobs for test_jobs.py, in a module of their own: worker processes import it by name."""

import os
import time

import torch


def square_job(x, *, tracker=None):
    """Logs two steps and returns x² with the worker's pid and intra-op thread count."""
    for step in range(2):
        tracker.log_metrics({"job/value": float(x * step)}, step=step)
    return x * x, os.getpid(), torch.get_num_threads()


def failing_job(*, tracker=None):
    raise ValueError("bad job")


def sleeping_job(seconds, *, tracker=None):
    time.sleep(seconds)
    return "slept"
