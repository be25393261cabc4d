"""Block removal (eq 4.6): x_{i+1} = B_{i+1}(x_{i−1}); the config is kept in sync for `save_pretrained`."""

from __future__ import annotations

import copy
from dataclasses import replace

from torch import nn

from ditcompress.compress.errors import CompressionError
from ditcompress.compress.record import CompressionRecord, attach, record_of
from ditcompress.models.base import unwrap
from ditcompress.models.registry import adapter_for

def check_block_ids(refs, block_ids) -> None:
    """One-line error naming the first id that is not a block of the model."""
    known = [r.id for r in refs]
    for b in block_ids:
        if b not in known:
            raise CompressionError(f"unknown block id {b!r} (the model has {known[0]}..{known[-1]}, "
                                   f"{len(known)} blocks)")


def remove_blocks(transformer: nn.Module, block_ids: list[str], *, inplace: bool = False
                  ) -> tuple[nn.Module, CompressionRecord]:
    """The model without the listed blocks, and its updated record (the input is untouched unless `inplace`)."""
    adapter = adapter_for(transformer)
    model = unwrap(transformer)
    refs = adapter.blocks(model)
    check_block_ids(refs, block_ids)
    drop = set(block_ids)
    if len(drop) >= len(refs):
        raise CompressionError(f"cannot remove every block ({len(refs)} of {len(refs)})")
    record = record_of(model)
    if not inplace:
        model = copy.deepcopy(model)
        refs = adapter.blocks(model)
    for kind in dict.fromkeys(r.kind for r in refs):
        adapter.set_blocks(model, kind, [r.module for r in refs if r.kind == kind and r.id not in drop])
    order = [r.id for r in refs]
    removed = [b for b in order if b in drop]
    new = replace(
        record,
        removed=sorted(record.removed + removed, key=execution_order),
        svd={k: v for k, v in record.svd.items() if not any(k.startswith(f"{b}.") for b in removed)},
        steps=record.steps + [{"op": "remove", "blocks": removed}],
    )
    attach(model, new)
    return model, new


def execution_order(block_id: str) -> tuple[int, int]:
    """Sort key putting ids in execution order: pixart by index, Flux double before single."""
    kind, _, idx = block_id.rpartition(".")
    return ({"": 0, "double": 0, "single": 1}[kind], int(idx))
