"""SVD compression of chosen blocks (4.4.2), iterated on already factorised layers (4.4.3), with
magnitude or GRASP selection of singular values (4.4.4) and separate ratios per part (5.1.7).

`ratio` is the fraction of a layer's parameters removed (eq 4.9): either one float (applied to
the attention and MLP linears, as in 5.1.6; modulation layers stay dense) or a dict whose keys are
part names of `adapter.block_parts` ("self_attn", "image_mlp", ...) or groups ("attn", "mlp",
"modulation"); a part's own key wins over its group's, and linears matched by no key stay dense.
A dict value may be a `Rank` instead: that exact rank for every layer it selects (5.1.6);
`ratio_spec(ratio, ranks)` builds such a spec.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from ditcompress.compress.errors import CompressionError
from ditcompress.compress.lowrank import LowRankLinear, factorize
from ditcompress.compress.rank import check_ratio, target_rank
from ditcompress.compress.record import CompressionRecord, LowRankSpec, attach, record_of
from ditcompress.compress.removal import check_block_ids
from ditcompress.models.base import FamilyAdapter, unwrap
from ditcompress.models.registry import adapter_for

GROUPS = ("attn", "mlp", "modulation")


@dataclass
class Target:
    """One linear layer to factorise: where it lives, its ratio and the rank that ratio gives."""

    key: str  # "<block id>.<path in block>", the record's key
    parent: nn.Module
    attr: str
    layer: nn.Module
    ratio: float  # fraction of its parameters removed (negative: an explicit rank that adds some)
    rank: int


@dataclass(frozen=True)
class Rank:
    """An explicit target rank in a ratio spec (5.1.6: e.g. rank 512 for every MLP linear)."""

    k: int


def ratio_spec(ratio, ranks: dict[str, int] | None = None):
    """`ratio` with `ranks` ({part or group: rank}) replacing its ratios key by key; `ratio` alone without."""
    if not ranks:
        return ratio
    spec = {"attn": ratio, "mlp": ratio} if isinstance(ratio, (int, float)) else dict(ratio)
    return {**spec, **{key: Rank(int(k)) for key, k in ranks.items()}}


def resolve_ratios(adapter: FamilyAdapter, ratio) -> dict[str, float | Rank]:
    """Validated `{part or group: ratio or Rank}`; a float means attention + MLP (5.1.6)."""
    spec = {"attn": ratio, "mlp": ratio} if isinstance(ratio, (int, float)) else dict(ratio)
    known = known_parts(adapter)
    for key, value in spec.items():
        if key not in known:
            raise CompressionError(f"unknown SVD part {key!r} for {adapter.name} (parts/groups: {sorted(known)})")
        if isinstance(value, Rank):
            if value.k < 1:
                raise CompressionError(f"SVD rank for {key!r} must be >= 1 (got {value.k})")
        else:
            check_ratio(value, f"SVD ratio for {key!r}")
    return spec


def known_parts(adapter: FamilyAdapter) -> set[str]:
    """The keys a ratio spec may use for this family: its part names and the groups."""
    return set(GROUPS) | set(adapter.part_groups)


def plan(transformer: nn.Module, block_ids: list[str], ratio, multiple: int = 1) -> list[Target]:
    """The linears of `block_ids` the ratio spec selects, each with its target rank (eq 4.9, or its `Rank`)."""
    adapter = adapter_for(transformer)
    refs = adapter.blocks(transformer)
    check_block_ids(refs, block_ids)
    spec = resolve_ratios(adapter, ratio)
    return [t for ref in refs if ref.id in block_ids for t in _block_targets(adapter, ref, spec, multiple)]


def _block_targets(adapter: FamilyAdapter, ref, spec: dict[str, float | Rank], multiple: int) -> list[Target]:
    """Targets inside one block; a part's own ratio (or rank) wins over its group's."""
    targets = []
    for part, names in adapter.block_parts(ref).items():
        for name in names:
            c = spec.get(part, spec.get(adapter.linear_group(ref, part, name)))
            if c is None:
                continue
            for path, layer in _linears(ref.module, name):
                key = f"{ref.id}.{path}"
                n, m = layer.out_features, layer.in_features
                current = layer.rank if isinstance(layer, LowRankLinear) else None
                if isinstance(c, Rank):
                    k = _check_rank(key, n, m, c.k, current)
                    ratio = 1 - k * (n + m) / (n * m if current is None else current * (n + m))
                else:
                    k = target_rank(n, m, c, multiple, rank=current)  # ≤ min(n, m), or ≤ the current rank
                    ratio = c
                parent_path, _, attr = path.rpartition(".")
                parent = ref.module.get_submodule(parent_path) if parent_path else ref.module
                targets.append(Target(key, parent, attr, layer, ratio, k))
    return targets


def _check_rank(key: str, n: int, m: int, k: int, current: int | None) -> int:
    """An explicit rank below min(out, in) (at that rank nothing is saved) and at most a factorised layer's rank."""
    if not 0 < k < min(n, m):
        raise CompressionError(f"SVD rank {k} for layer {key!r} ({n}×{m}) must be in [1, {min(n, m)})")
    if current is not None and k > current:
        raise CompressionError(f"SVD rank {k} for layer {key!r} exceeds its current rank {current}")
    return k


def _linears(block: nn.Module, name: str):
    """(path in block, layer) of every dense or low-rank linear at or under submodule `name`."""
    try:
        root = block.get_submodule(name)
    except AttributeError:  # a bare parameter (PixArt's modulation table): nothing to factorise
        return []
    found = [(name, root)] if isinstance(root, (nn.Linear, LowRankLinear)) else []
    if not found:
        found = [(f"{name}.{p}", m) for p, m in root.named_modules()
                 if isinstance(m, (nn.Linear, LowRankLinear))]
    return found


def svd_compress(transformer: nn.Module, block_ids: list[str], ratio, *, multiple: int = 1,
                 scores: dict[str, torch.Tensor] | None = None, inplace: bool = False
                 ) -> tuple[nn.Module, CompressionRecord]:
    """Factorise the selected linears of `block_ids` to the eq-4.9 rank of their ratio (or their `Rank`).

    Dense layers are decomposed directly; layers that are already `LowRankLinear` are recomposed
    (W_t = A_t B_t) and decomposed again at the smaller rank (iterated SVD, 4.4.3). With
    `scores[key]` (one per singular value, e.g. from `grasp_scores`) the highest-scoring singular
    values are kept instead of the largest (GRASP, 4.4.4).
    """
    model = unwrap(transformer)
    record = record_of(model)
    if not inplace:
        model = copy.deepcopy(model)
    targets = plan(model, block_ids, ratio, multiple)
    done = {}
    for t in targets:
        low = factorize(t.layer, t.rank, None if scores is None else scores.get(t.key))
        setattr(t.parent, t.attr, low)
        done[t.key] = LowRankSpec(t.rank, low.out_features, low.in_features, low.bias is not None)
    new = replace(record, svd={**record.svd, **done},
                  steps=record.steps + [{"op": "svd", "grasp": scores is not None,
                                         "ranks": {k: v.rank for k, v in done.items()}}])
    attach(model, new)
    return model, new


def apply_record_structure(transformer: nn.Module, record: CompressionRecord) -> None:
    """Swap every layer listed in `record.svd` for an (uninitialised) `LowRankLinear` of its rank."""
    adapter = adapter_for(transformer)
    by_id = {r.id: r for r in adapter.blocks(transformer)}
    for key, spec in record.svd.items():
        block_id = next((b for b in by_id if key.startswith(f"{b}.")), None)
        if block_id is None:
            raise CompressionError(f"manifest layer {key!r} is in no block of the model")
        path = key[len(block_id) + 1:]
        parent_path, _, attr = path.rpartition(".")
        block = by_id[block_id].module
        parent = block.get_submodule(parent_path) if parent_path else block
        old = getattr(parent, attr)
        p = next(old.parameters())
        setattr(parent, attr, LowRankLinear(spec.inp, spec.out, spec.rank, spec.bias, device=p.device, dtype=p.dtype))
