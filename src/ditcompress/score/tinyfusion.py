"""TinyFusion: learnable block masks (thesis eq 4.5; Fang et al., "TinyFusion: Diffusion Transformers
Learned Shallow", CVPR 2025).

The blocks are split into K consecutive groups of M blocks, each keeping N of them. Every group
has a categorical distribution over its C(M, N) keep-masks (one logit per candidate). A training
step draws one mask per group with hard Gumbel-softmax (straight-through, so the logits get
gradients), gates each block by its mask value (m=0 is exactly removing the block) and updates
the mask logits together with LoRA adapters on the blocks' linear layers (or all weights when
`lora_rank == 0`). The objective is recoverability,

    min over mask distributions of min over ΔΦ of E[L(x, Φ + ΔΦ, m)],

so a mask wins when the model without its dropped blocks is easy to repair, not when it is
good before any repair. The selection is each group's most probable mask; the trained weights
are thrown away (compression starts again from the teacher).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ditcompress.errors import UserError
from ditcompress.models.base import BlockOutput, Conditioning, FamilyAdapter, Objective, unwrap
from ditcompress.models.registry import adapter_for
from ditcompress.utils.logging import progress

GROUP_KEY = "score.selection.tinyfusion.group_size"
K_KEY = "score.selection.k"
# one logit per candidate mask: a group with more candidates than this is refused (use a group_size)
MAX_CANDIDATES = 100_000


@dataclass
class TinyFusionResult:
    """The learned selection, the final mask distributions and the training trace."""

    removed: list[str]  # block ids the most probable masks drop, in execution order
    groups: list[dict]  # per group: {"blocks", "masks" (kept ids), "probabilities", "best" (index)}
    history: list[dict]  # per step: {"step", "loss", "tau", "max_probability" (per group)}


def learn_masks(transformer: nn.Module, objective: Objective, batches: Iterable[tuple[torch.Tensor, Conditioning]],
                *, remove: int, group_size: int | None = None, steps: int = 300, lr: float = 1e-3,
                mask_lr: float = 5e-2, lora_rank: int = 8, tau: tuple[float, float] = (4.0, 0.1),
                loss: str = "task", teacher: nn.Module | None = None, seed: int = 0, bar: bool = True,
                on_step: Callable[[int, dict[str, float]], None] | None = None) -> TinyFusionResult:
    """Learn which `remove` blocks to drop by training mask distributions and weights jointly (eq 4.5).

    `batches` is an iterable of `(latents (B, C, h, w), Conditioning)`; a re-iterable one (list,
    DataLoader) starts over when it runs out, a one-shot iterator must yield `steps` batches.
    `group_size` None is one group of all blocks; otherwise it must divide the block count and
    each group drops `remove / K`. `loss="task"` is the denoising MSE; `loss="distill"` is the MSE
    to the frozen `teacher`'s prediction at the same noisy input and time. The Gumbel temperature
    goes linearly from `tau[0]` at the first step to `tau[1]` at the last (as in the reference).
    All draws (times, noise, Gumbel noise, LoRA init) come from `seed`, so a rerun on the same
    device gives the same result. `on_step(step, metrics)` gets flat float metrics for a tracker.

    The caller's `transformer` is not touched: a deep copy trains, so memory holds a second copy
    of the weights (plus gradients and Adam state of all of them when `lora_rank == 0`), and the
    teacher when distilling (`teacher` may be `transformer` itself: neither is modified, so no
    third copy is needed). The copy is discarded; only the selection is returned.
    """
    adapter = adapter_for(transformer)
    ids = [b.id for b in adapter.blocks(transformer)]
    groups = split_groups(ids, remove, group_size)
    _check_training(steps, lora_rank, tau, loss, teacher)
    options = [candidate_masks(len(g), len(g) - remove // len(groups)) for g in groups]

    generator = torch.Generator().manual_seed(seed)
    student = _trainable_copy(transformer, adapter, lora_rank, seed)
    device = next(student.parameters()).device
    logits = [torch.zeros(len(o), device=device, requires_grad=True) for o in options]
    weights = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam([{"params": weights, "lr": lr}, {"params": logits, "lr": mask_lr}])

    gate: dict[str, torch.Tensor] = {}
    stream = _cycle(batches)
    history = []
    with adapter.hook_blocks(student, ids, lambda block_id, inp, out: _gated(gate[block_id], inp, out)):
        for step in (pbar := progress(range(steps), desc="tinyfusion", unit="step", disable=not bar)):
            temperature = anneal(tau, step, steps)
            mask = torch.cat([sample_mask(lg, opt, temperature, generator) for lg, opt in zip(logits, options)])
            gate.update(zip(ids, mask))
            latents, cond = next(stream)
            value = _loss(adapter, student, objective, latents, cond, loss, teacher, generator)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            history.append(_record(step, value, temperature, logits))
            pbar.set_postfix(loss=f"{history[-1]['loss']:.4g}", refresh=False)
            if on_step is not None:
                on_step(step, _flat(history[-1]))
    return _result(groups, options, logits, history)


def split_groups(ids: list[str], remove: int, group_size: int | None) -> list[list[str]]:
    """Consecutive groups of `group_size` ids (None: one group), checked so each drops the same count."""
    size = len(ids) // check_groups(len(ids), remove, group_size)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def check_groups(n_blocks: int, remove: int, group_size: int | None) -> int:
    """The group count K for dropping `remove` of `n_blocks`; one-line errors naming the params key.

    Run by the score stage before any work, and by `learn_masks` itself.
    """
    if not 1 <= remove < n_blocks:
        raise UserError(f"{K_KEY}: TinyFusion removes between 1 and {n_blocks - 1} of the {n_blocks} blocks "
                        f"(got {remove})")
    size = n_blocks if group_size is None else group_size
    if not 2 <= size <= n_blocks or n_blocks % size:
        raise UserError(f"{GROUP_KEY}: {group_size} must divide the {n_blocks} blocks into groups of at least 2")
    k = n_blocks // size
    if remove % k:
        raise UserError(f"{K_KEY}: {remove} blocks cannot be split evenly over {k} groups of {size} "
                        f"(k must be a multiple of {k})")
    count = math.comb(size, remove // k)
    if count > MAX_CANDIDATES:
        raise UserError(f"{GROUP_KEY}: groups of {size} dropping {remove // k} have {count} candidate masks "
                        f"(at most {MAX_CANDIDATES}); use smaller groups")
    return k


def candidate_masks(size: int, keep: int) -> torch.Tensor:
    """All keep-masks of a group, `(C(size, keep), size)` with 1 = kept, in `itertools.combinations` order."""
    rows = [[float(i in kept) for i in range(size)] for kept in itertools.combinations(range(size), keep)]
    return torch.tensor(rows)


def anneal(tau: tuple[float, float], step: int, steps: int) -> float:
    """Linear temperature from `tau[0]` (step 0) to `tau[1]` (last step): explore first, commit last."""
    frac = step / (steps - 1) if steps > 1 else 0.0
    return tau[0] + (tau[1] - tau[0]) * frac


def sample_mask(logits: torch.Tensor, options: torch.Tensor, tau: float,
                generator: torch.Generator) -> torch.Tensor:
    """One group's block gates from a hard Gumbel-softmax draw: exactly 0/1 forward, soft gradient back.

    Own Gumbel noise instead of `F.gumbel_softmax`, which cannot take a generator.
    """
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-10, 1 - 1e-7).to(logits.device)
    soft = F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=0)
    hard = F.one_hot(soft.argmax(), soft.numel()).to(soft)
    return (hard - soft.detach() + soft) @ options.to(soft)


def _gated(m: torch.Tensor, inp: BlockOutput, out: BlockOutput) -> BlockOutput:
    """`m·block(x) + (1-m)·x` on every stream: m=1 keeps the block, m=0 removes it exactly."""
    def mix(o, i):
        w = m.to(o.dtype)
        return w * o + (1 - w) * i
    return BlockOutput(image=mix(out.image, inp.image),
                       text=None if out.text is None else mix(out.text, inp.text))


def _check_training(steps: int, lora_rank: int, tau: tuple[float, float], loss: str, teacher) -> None:
    """One-line errors for settings the config schema would also refuse (direct callers skip it)."""
    key = "score.selection.tinyfusion"
    if steps < 1:
        raise UserError(f"{key}.steps: at least 1 (got {steps})")
    if lora_rank < 0:
        raise UserError(f"{key}.lora_rank: 0 (full weights) or a positive rank (got {lora_rank})")
    if len(tau) != 2 or min(tau) <= 0:
        raise UserError(f"{key}.tau: two positive temperatures [first, last] (got {list(tau)})")
    if loss not in ("task", "distill"):
        raise UserError(f"{key}.loss: task or distill (got {loss!r})")
    if loss == "distill" and teacher is None:
        raise UserError(f"{key}.loss: distill needs the teacher model")


def _trainable_copy(transformer: nn.Module, adapter: FamilyAdapter, lora_rank: int, seed: int) -> nn.Module:
    """A deep copy whose trainable parameters are LoRA adapters on the blocks' linears (or all weights)."""
    student = copy.deepcopy(unwrap(transformer))
    if lora_rank == 0:
        student.requires_grad_(True)
        return student
    from peft import LoraConfig, inject_adapter_in_model

    student.requires_grad_(False)
    config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, lora_dropout=0.0,
                        target_modules=_block_linears(student, adapter))
    # peft draws the A matrices from the global RNG: seed it, and leave the caller's state as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, student)
    for name, p in student.named_parameters():
        p.requires_grad_("lora_" in name)
    return student


def _block_linears(model: nn.Module, adapter: FamilyAdapter) -> list[str]:
    """Full names of the `nn.Linear`s inside the transformer blocks (not embeddings or the final layer)."""
    blocks = {id(b.module) for b in adapter.blocks(model)}
    names = []
    for prefix, module in model.named_modules():
        if id(module) in blocks:
            names += [f"{prefix}.{n}" for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return names


def _cycle(batches: Iterable) -> Iterator:
    """Batches forever: a re-iterable starts over; a one-shot iterator that runs out is an error."""
    while True:
        it = iter(batches)
        seen = False
        for item in it:
            seen = True
            yield item
        if not seen or it is batches:
            raise ValueError("TinyFusion ran out of batches: pass a re-iterable (list, DataLoader) "
                             "or an iterator with at least `steps` batches")


def _loss(adapter: FamilyAdapter, student: nn.Module, objective: Objective, latents: torch.Tensor,
          cond: Conditioning, loss: str, teacher: nn.Module | None, generator: torch.Generator) -> torch.Tensor:
    """Denoising MSE (`task`), or MSE to the frozen teacher's prediction at the same x_t and t (`distill`)."""
    ref = next(student.parameters())
    latents, cond = latents.to(ref.device, ref.dtype), cond.to(ref.device, ref.dtype)
    if loss == "task":
        return adapter.task_loss(student, objective, latents, cond, generator=generator).mean()
    t = objective.sample_t(latents.shape[0], generator=generator, device=latents.device)
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    noisy = objective.add_noise(latents, noise, t)
    with torch.no_grad():
        target = adapter.predict(teacher, noisy, t, cond)
    return F.mse_loss(adapter.predict(student, noisy, t, cond).float(), target.float())


def _record(step: int, value: torch.Tensor, tau: float, logits: list[torch.Tensor]) -> dict:
    """One history row: the step's loss and temperature, and how sure each group is."""
    with torch.no_grad():
        peaks = [F.softmax(lg, dim=0).max().item() for lg in logits]
    return {"step": step, "loss": value.item(), "tau": tau, "max_probability": peaks}


def _flat(row: dict) -> dict[str, float]:
    """A history row as flat float metrics (`max_probability_<group>`), what trackers accept."""
    flat = {"loss": row["loss"], "tau": row["tau"]}
    flat.update({f"max_probability_{g}": p for g, p in enumerate(row["max_probability"])})
    return flat


def _result(groups: list[list[str]], options: list[torch.Tensor], logits: list[torch.Tensor],
            history: list[dict]) -> TinyFusionResult:
    """Each group's most probable mask, the blocks it drops, and the full distributions."""
    out, removed = [], []
    for ids, opts, lg in zip(groups, options, logits):
        probs = F.softmax(lg.detach().float().cpu(), dim=0)
        best = int(probs.argmax())
        masks = [[b for b, keep in zip(ids, row) if keep] for row in opts.tolist()]
        out.append({"blocks": list(ids), "masks": masks, "probabilities": probs.tolist(), "best": best})
        removed += [b for b in ids if b not in masks[best]]
    return TinyFusionResult(removed=removed, groups=out, history=history)
