"""Two CPU processes under `accelerate launch` train what one process trains with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(root: Path, out: Path, processes: int) -> tuple[dict, dict]:
    out.mkdir(parents=True)
    # torchrun-style processes (--multi_gpu); the worker's Accelerator(cpu=True) makes them CPU (gloo) ranks
    multi = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *multi, "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(WORKER), str(root), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(out / "student.safetensors"), json.loads((out / "history.json").read_text())


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(world, tmp_path):
    root, _ = world
    one, log1 = _launch(root, tmp_path / "one", 1)
    two, log2 = _launch(root, tmp_path / "two", 2)
    assert (log1["processes"], log2["processes"]) == (1, 2)
    # the logged loss is the main process's half of the batch under DDP: compare the weights
    assert one.keys() == two.keys() and len(log1["history"]) == len(log2["history"]) == 3
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6, msg=k)
    # and they trained: the kept block moved away from the teacher's weights
    from ditcompress.models import get_adapter

    teacher = get_adapter("pixart").load_transformer(root / "models" / "shapes" / "pixart").state_dict()
    key = "transformer_blocks.0.ff.net.2.weight"
    assert (one[key] - teacher[key]).abs().max() > 1e-3
