"""One logger for the project; only the main process (rank 0) speaks under accelerate."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def process_rank() -> int:
    """Global rank from the launcher's environment (accelerate / torchrun set RANK)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs)."""
    return process_rank() == 0


def get_logger(name: str = "ditcompress") -> logging.Logger:
    """Project logger: INFO on rank 0, WARNING elsewhere, one handler, timestamps."""
    logger = logging.getLogger(name if name.startswith("ditcompress") else f"ditcompress.{name}")
    root = logging.getLogger("ditcompress")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = process_rank()
        tag = f"[rank{rank}] " if rank else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {tag}%(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        root.propagate = False
    return logger


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """tqdm progress bar (with rates and ETA) shown on the main process only."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 1.0)
    return tqdm(iterable, disable=not is_main_process() or kwargs.pop("disable", False), **kwargs)


class StepBars:
    """A tracker that also draws one progress bar per training component from its logged steps.

    `totals` maps a component (the part of a metric name before "/", e.g. "pixart" of
    "pixart/loss") to its number of steps; metrics are passed on to `tracker` unchanged. The bars
    live in the process that owns the tracker, so components training in worker processes
    (zoo/jobs.py forwards their metrics) show up side by side without interleaved output.
    """

    def __init__(self, totals: dict[str, int], tracker=None):
        self.totals, self.tracker, self.bars = dict(totals), tracker, {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Forward `metrics`; move the bar of each component they belong to up to `step` + 1."""
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=step)
        for key, value in metrics.items():
            name, _, metric = key.partition("/")
            if step is None or name not in self.totals:
                continue
            bar = self.bars.get(name)
            if bar is None:
                bar = self.bars[name] = progress(total=self.totals[name], desc=name, unit="step",
                                                 position=len(self.bars), leave=True)
            bar.update(step + 1 - bar.n)
            bar.set_postfix({metric: f"{value:.4g}"}, refresh=False)

    def __getattr__(self, name):
        # everything else a tracker offers (images, params) goes to the wrapped one
        if self.tracker is None:
            raise AttributeError(name)
        return getattr(self.tracker, name)

    def close(self) -> None:
        """Finish every bar."""
        for bar in self.bars.values():
            bar.close()
