"""Train the zoo's components side by side: a small process pool that forwards training logs.

On a 2-core CPU one training loop of these tiny models gains little from its second intra-op
thread: a PixArt teacher step ran 7.1 steps/s with two threads, and two teachers in separate
processes with one thread each ran 6.3 and 5.4 steps/s at the same time. So the pretrain stage
trains independent components in `workers` processes with `threads // workers` intra-op threads
each. (Threads of one process reach only 1.3x: the Python side of the tiny ops holds the GIL.)

A job is a module-level function called as `fn(*args, tracker=..., **kwargs)`; it builds its own
model from a seed, trains it and returns plain values (weights as safetensors bytes, figures).
Nothing depends on the schedule: the same jobs give the same weights with one worker as with
two, as long as each job sees the same number of intra-op threads. Step metrics a worker logs
reach the parent's tracker through a queue. With one worker, jobs run in this process (no
pickling, breakpoints work). A failing or interrupted stage stops the other jobs at once.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_lib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import nn

_LOG_QUEUE: Any = None  # in a worker process: where its jobs' step metrics go


def weights_to_bytes(module: nn.Module) -> bytes:
    """A module's state dict as safetensors bytes (how jobs hand weights back)."""
    return save_bytes({k: v.detach().contiguous() for k, v in module.state_dict().items()})


def load_weights(module: nn.Module, data: bytes) -> nn.Module:
    """Load safetensors bytes from `weights_to_bytes` into `module` (strict); returns it in eval mode."""
    module.load_state_dict(load_bytes(data))
    return module.eval()


class _QueueTracker:
    """A worker's tracker: sends step metrics to the parent process, which logs them."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        _LOG_QUEUE.put((dict(metrics), step))


def _init_worker(log_queue, threads: int) -> None:
    global _LOG_QUEUE
    _LOG_QUEUE = log_queue
    torch.set_num_threads(threads)


def _call(fn: Callable, args: tuple, kwargs: dict):
    return fn(*args, tracker=_QueueTracker(), **kwargs)


class _Done:
    """The result of a job that already ran in this process."""

    def __init__(self, value):
        self.value = value


class JobPool:
    """`with JobPool(workers, threads, tracker) as pool: job = pool.submit(fn, ...); pool.result(job)`."""

    def __init__(self, workers: int, threads: int, tracker=None):
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got workers={workers}, threads={threads}")
        self.workers, self.tracker = workers, tracker
        self.threads = max(1, threads // workers)  # intra-op threads of every job
        self._pool = self._queue = None

    def __enter__(self) -> JobPool:
        torch.set_num_threads(self.threads)  # in-process jobs and the parent's own work between jobs
        if self.workers > 1:
            ctx = mp.get_context("spawn")  # fork after torch has started its thread pools can hang
            self._queue = ctx.Queue()
            # concurrent.futures, not multiprocessing.Pool: a worker that dies (killed, out of
            # memory, a job it cannot unpickle) fails the stage instead of hanging it
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(self._queue, self.threads))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        if exc_type is not None:
            # do not let the other jobs train on for minutes after a failure or Ctrl-C
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
        if exc_type is None:
            self._forward(timeout=0.2)

    def submit(self, fn: Callable, *args, **kwargs):
        """Start `fn(*args, tracker=..., **kwargs)`; with one worker it runs to completion here."""
        if self._pool is None:
            return _Done(fn(*args, tracker=self.tracker, **kwargs))
        return self._pool.submit(_call, fn, args, kwargs)

    def result(self, job):
        """The job's return value, once it is done; re-raises its exception. Forwards logs meanwhile."""
        if isinstance(job, _Done):
            return job.value
        while not job.done():
            self._forward(timeout=0.5)
        self._forward(timeout=0.0)
        return job.result()

    def _forward(self, timeout: float) -> None:
        """Pass queued step metrics to the tracker (waiting up to `timeout` for the first)."""
        while True:
            try:
                metrics, step = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            except queue_lib.Empty:
                return
            if self.tracker is not None:
                self.tracker.log_metrics(metrics, step=step)
            timeout = 0.0
