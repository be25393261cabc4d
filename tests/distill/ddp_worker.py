"""Run by tests/distill/test_ddp.py under `accelerate launch`: a few distillation steps of the world's
student, the final weights and the logged losses written by the main process.

    accelerate launch --cpu --num_processes 2 ddp_worker.py <world root> <out dir>
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from ditcompress.compress import feature_mapping, remove_blocks
from ditcompress.distill.config import recipe_for
from ditcompress.distill.train import Setup, distill
from ditcompress.models import get_adapter
from ditcompress.models.base import Conditioning
from ditcompress.params import parse_params
from ditcompress.zoo.teacher import TeacherData


def main(root: Path, out: Path) -> None:
    torch.set_num_threads(1)
    adapter = get_adapter("pixart")
    teacher = adapter.load_transformer(root / "models" / "shapes" / "pixart").requires_grad_(False)
    student, record = remove_blocks(teacher, ["1"])
    objective = adapter.objective({"num_train_timesteps": 1000, "prediction_type": "v_prediction",
                                   "beta_schedule": "squaredcos_cap_v2"})
    setup = Setup(adapter, objective, teacher, student.requires_grad_(True), record,
                  feature_mapping(["0", "1"], record))
    g = torch.Generator().manual_seed(0)
    data = TeacherData(torch.randn(16, 4, 8, 8, generator=g),
                       Conditioning(torch.randn(5, 16, 16, generator=g), torch.ones(5, 16, dtype=torch.long)),
                       torch.randint(5, (16,), generator=g),
                       Conditioning(torch.randn(1, 16, 16, generator=g), torch.ones(1, 16, dtype=torch.long)))
    # eps = 1: an update proportional to the gradient, so the all-reduce's rounding stays rounding
    cfg = recipe_for(parse_params({"distill": {
        "batch_size": 8, "device": "cpu", "warmup_steps": 1, "log_every": 1, "ema_decay": 0.0, "lr": 1.0,
        "eps": [1.0], "protocol": "two_stage", "steps": {"global": 3, "domain": 0}}}).distill, "shapes-pixart")
    acc = Accelerator(cpu=True)
    history: list = []
    model = distill(setup, cfg, {"laion": data}, out / "ckpt", accelerator=acc, history=history)
    if acc.is_main_process:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "student.safetensors")
        (out / "history.json").write_text(json.dumps({"processes": acc.num_processes, "history": history}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
