"""What every stage script does around its one library call: params, seeding, MLflow, errors."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ditcompress.errors import UserError
from ditcompress.params import Params, load_params
from ditcompress.tracking import StageRun, stage_run


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_stage(name: str, sections: Sequence[str], body: Callable[[Params, StageRun], dict[str, Any] | None]) -> None:
    """Load params, seed, open the stage's MLflow run, call `body`, record its summary metrics.

    A `UserError` (bad params, missing file, bad id) is printed as one line and exits with 2.
    """
    try:
        params = load_params(os.environ.get("DITCOMPRESS_PARAMS", "params.yaml"))
        seed_everything(params.seed)
        with stage_run(name, params, sections=sections) as run:
            metrics = body(params, run)
            if metrics:
                run.log_metrics(metrics)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
