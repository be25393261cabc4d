"""The distillation loop: the protocol's phases (5.1.5) over cached sets, on accelerate, resumable.

    student = distill(ctx, cfg, sets, checkpoint_dir, tracker)

One seeded CPU generator draws every batch index, caption dropout, time and noise for the global
batch; each process of `accelerate launch` takes its rows, so N processes compute what one
process computes with the same global batch (up to the float order of the gradient all-reduce).
Its state is part of each checkpoint, together with weights, EMA, optimiser and schedule, so a
run killed at any point resumes where the last checkpoint left it and, on a CPU, ends with the
weights of an uninterrupted run. A non-finite loss stops the run naming the step and the term.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ditcompress.compress.record import CompressionRecord
from ditcompress.distill.checkpoint import load_checkpoint, save_checkpoint
from ditcompress.distill.config import DistillConfig
from ditcompress.distill.loss import KDObjective
from ditcompress.errors import UserError
from ditcompress.models.base import FamilyAdapter, Objective, unwrap
from ditcompress.utils.logging import get_logger, progress
from ditcompress.zoo.common import ema_update
from ditcompress.zoo.teacher import TeacherData

log = get_logger(__name__)


# settings that do not change the trained weights: a resumed run may change them
NOT_IN_KEY = {"checkpoint_every", "checkpoint_dir", "log_every", "sample_prompts", "device"}


class TrainingDiverged(UserError):
    """A loss term became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Setup:
    """What the loop trains: the family's adapter and objective, the frozen teacher, the student and its record."""

    adapter: FamilyAdapter
    objective: Objective
    teacher: nn.Module
    student: nn.Module
    record: CompressionRecord
    pairs: list[tuple[str, str]]  # (teacher block, student block) feature pairs (4.5.2)


def local_blocks(setup: Setup) -> list[str]:
    """The student blocks the local-stabilisation phase trains (5.1.1).

    Removal: the kept block immediately before each gap (it stands in for the removed blocks, its
    feature target is the gap's last teacher block), and the first kept block when the gap is at
    the start. SVD: the compressed blocks.
    """
    ids = [r.id for r in setup.adapter.blocks(setup.student)]
    chosen = {sid for tid, sid in setup.pairs if tid != sid}
    teacher_ids = [r.id for r in setup.adapter.blocks(setup.teacher)]
    if setup.record.removed and teacher_ids[0] in setup.record.removed:
        chosen.add(ids[0])
    chosen |= {key.split(".")[0] if setup.adapter.name == "pixart" else ".".join(key.split(".")[:2])
               for key in setup.record.svd}
    return [i for i in ids if i in chosen]


def trainable(setup: Setup, what: str) -> list[nn.Parameter]:
    """Set `requires_grad` for a phase ("all" or "local") and return the parameters that train."""
    model = unwrap(setup.student)
    model.requires_grad_(what == "all")
    if what == "local":
        blocks = local_blocks(setup)
        if not blocks:
            raise UserError("distill: the local phase has no block to train (nothing was removed or compressed)")
        for ref in setup.adapter.blocks(model):
            if ref.id in blocks:
                ref.module.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(cfg: DistillConfig, params: list[nn.Parameter], total: int):
    """CAME or AdamW with linear warm-up, then constant or cosine (to 10 %) learning rate."""
    if cfg.optimizer == "came":
        from came_pytorch import CAME

        opt = CAME(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas), eps=tuple(cfg.eps))
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas),
                                eps=cfg.eps[0])
    warmup, cosine = cfg.warmup_steps, cfg.lr_schedule == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress_ = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def distill(setup: Setup, cfg: DistillConfig, sets: dict[str, TeacherData], checkpoint_dir: str | Path,
            tracker=None, *, key: dict | None = None, accelerator=None, stop_after: int | None = None,
            history: list | None = None) -> nn.Module:
    """Run the protocol's phases; returns the student to save (its EMA when `cfg.ema_decay` > 0).

    A checkpoint is resumed only when it was written with the same settings and `key` (what else
    identifies the run: teacher, student, data). `history` receives one row per logged window.
    `stop_after` ends the call after that many global steps, as a kill would (tests).
    """
    from accelerate import Accelerator

    acc = accelerator or Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
    world, rank = acc.num_processes, acc.process_index
    if cfg.batch_size % world:
        raise UserError(f"distill.batch_size: {cfg.batch_size} does not split over {world} processes")
    device = acc.device
    phases = cfg.phases()
    total_steps = sum(n for *_, n in phases)
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_IN_KEY}
    key = json.loads(json.dumps({**(key or {}), "settings": settings, "phases": phases}))  # as read back
    checkpoint_dir = Path(checkpoint_dir)

    model = unwrap(setup.student).to(device)
    setup.teacher.to(device).requires_grad_(False).eval()
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    ema = copy.deepcopy(model).requires_grad_(False).eval() if cfg.ema_decay > 0 else None
    g = torch.Generator().manual_seed(cfg.seed)
    start_phase, start_step, done = 0, 0, 0
    ckpt = load_checkpoint(checkpoint_dir)
    if ckpt is not None and ckpt["state"].get("key") != key:
        log.info("distill: %s holds another run's checkpoint (other settings or inputs); starting over",
                 checkpoint_dir)
        ckpt = None
    if ckpt is not None:
        model.load_state_dict(ckpt["student"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        g.set_state(ckpt["generator"])
        start_phase, start_step, done = (ckpt["state"][k] for k in ("phase", "step", "done"))
        log.info("distill: resuming at step %d of %d (%s phase, step %d) from %s", done, total_steps,
                 phases[start_phase][0] if start_phase < len(phases) else "end", start_step, checkpoint_dir)

    data = {name: d.to(device) for name, d in sets.items()}
    started, last_good = time.perf_counter(), done if ckpt is not None else None
    for p_index in range(start_phase, len(phases)):
        phase, set_name, what, steps = phases[p_index]
        params = trainable(setup, what)
        opt, sched = make_optimizer(cfg, params, steps)
        if ckpt is not None and p_index == start_phase and start_step > 0:  # else a new phase: fresh optimiser
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        wrapped, opt = acc.prepare(model, opt)
        kd = KDObjective(setup.adapter, setup.objective, setup.teacher, wrapped, setup.pairs, cfg.lambdas(),
                         normalized=cfg.normalized)
        d = data[set_name]
        n, rows = len(d.latents), slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
        first = start_step if p_index == start_phase else 0
        wrapped.train()
        window: dict[str, float] = {}
        window_start, window_steps = time.perf_counter(), 0
        bar = progress(total=steps, initial=first, desc=f"distill {phase} ({set_name}, {what})", unit="step")
        for step in range(first, steps):
            idx = torch.randint(n, (cfg.batch_size,), generator=g)
            drop = torch.rand(cfg.batch_size, generator=g) < cfg.caption_dropout
            t = setup.objective.sample_t(cfg.batch_size, generator=g)
            x0, cond = d.batch(idx.to(device), drop.to(device))
            noise = torch.randn(x0.shape, generator=g)
            with acc.autocast():
                loss, terms = kd(x0[rows], cond.select(rows), t[rows].to(device), noise[rows].to(device))
            bad = [k for k, v in terms.items() if not torch.isfinite(v)] or ([] if torch.isfinite(loss) else ["total"])
            if bad:
                where = (f"the last good checkpoint (step {last_good}) stays in {checkpoint_dir}"
                         if last_good is not None else "no checkpoint was written yet")
                raise TrainingDiverged(f"distill: step {done + 1} ({phase} phase): loss term {bad[0]} is "
                                       f"{terms.get(bad[0], loss).item()}; {where}")
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            grad_norm = acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            done += 1
            if ema is not None:
                ema_update(ema, model, cfg.ema_decay, done - 1)
            for k, v in {**terms, "loss": loss.detach(), "grad_norm": grad_norm}.items():
                window[k] = window.get(k, 0.0) + float(v)
            window_steps += 1
            bar.update(1)
            if window_steps == cfg.log_every or step == steps - 1:
                rate = window_steps * cfg.batch_size / max(time.perf_counter() - window_start, 1e-9)
                values = {f"distill/{k}": v / window_steps for k, v in window.items()}
                values.update({"distill/lr": sched.get_last_lr()[0], "distill/samples_per_s": rate})
                if tracker is not None:
                    tracker.log_metrics(values, step=done)
                if history is not None:
                    history.append({"step": done, "phase": phase, **{k.split("/")[1]: v for k, v in values.items()}})
                bar.set_postfix(loss=f"{values['distill/loss']:.4f}", refresh=False)
                window, window_start, window_steps = {}, time.perf_counter(), 0
            if done % cfg.checkpoint_every == 0 or step == steps - 1 or done == stop_after:
                _checkpoint(acc, checkpoint_dir, wrapped, ema, opt, sched, g, key,
                            p_index if step < steps - 1 else p_index + 1, step + 1 if step < steps - 1 else 0, done)
                last_good = done
            if done == stop_after:
                bar.close()
                return model
        bar.close()
        acc.free_memory()
    log.info("distill: %d steps in %.0f s", total_steps, time.perf_counter() - started)
    out = ema if ema is not None else model
    out.requires_grad_(False).eval()
    return out


def _checkpoint(acc, directory, wrapped, ema, opt, sched, g, key, phase, step, done) -> None:
    acc.wait_for_everyone()
    weights = acc.get_state_dict(wrapped)  # every rank takes part: FSDP gathers the shards here
    if acc.is_main_process:
        save_checkpoint(directory, student={k: v.detach().cpu() for k, v in weights.items()}, ema=None if ema is None else _float_state(ema),
                        optimizer=opt.state_dict(), scheduler=sched.state_dict(), generator=g.get_state(),
                        state={"key": key, "phase": phase, "step": step, "done": done})
    acc.wait_for_everyone()
