"""Parameter accounting per block and per block part (thesis tab. 4.1 / 4.2).

Works on the meta device, so the real 12 B Flux table costs no memory and no download.
"""

from __future__ import annotations

from itertools import groupby

from torch import nn

from ditcompress.models.base import BlockRef, FamilyAdapter, unwrap


def part_counts(adapter: FamilyAdapter, block: BlockRef) -> dict[str, int]:
    """Parameters of each part of `block`; anything no part claims is reported as "other"."""
    named = dict(block.module.named_parameters())
    counts, claimed = {}, set()
    for part, names in adapter.block_parts(block).items():
        mine = [k for k in named if any(k == n or k.startswith(n + ".") for n in names)]
        counts[part] = sum(named[k].numel() for k in mine)
        claimed.update(mine)
    other = sum(p.numel() for k, p in named.items() if k not in claimed)
    return {**counts, "other": other} if other else counts


def parameter_table(adapter: FamilyAdapter, transformer: nn.Module) -> dict:
    """Exact counts: every block's parts and total, the blocks' sum and the whole model."""
    model = unwrap(transformer)
    blocks = []
    for ref in adapter.blocks(model):
        parts = part_counts(adapter, ref)
        blocks.append({"id": ref.id, "kind": ref.kind, "parts": parts, "total": sum(parts.values())})
    in_blocks = sum(b["total"] for b in blocks)
    total = sum(p.numel() for p in model.parameters())
    return {"family": adapter.name, "class": type(model).__name__, "total": total,
            "blocks_total": in_blocks, "outside_blocks": total - in_blocks, "blocks": blocks}


def teacher_parameters(preset) -> int:
    """Parameters of a preset's teacher transformer, counted on the meta device from its config alone."""
    from ditcompress.models.loading import transformer_dir
    from ditcompress.models.registry import build_transformer, load_config

    local = transformer_dir(preset.pretrained, "transformer")
    if local is None:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(preset.pretrained, "config.json", subfolder="transformer")
    return sum(p.numel() for p in build_transformer(load_config(local), device="meta").parameters())


def _millions(n: int) -> str:
    """Parameters in millions with one decimal and thousands separators, as the thesis prints them."""
    return f"{n / 1e6:,.1f}"


def _runs(rows: list[dict]) -> list[list[dict]]:
    """Split blocks into runs of consecutive teacher ids with identical part counts."""
    runs: list[list[dict]] = []
    for row in rows:
        prev = runs[-1][-1] if runs else None
        consecutive = prev is not None and int(row["id"].rpartition(".")[2]) == int(prev["id"].rpartition(".")[2]) + 1
        if consecutive and row["parts"] == prev["parts"]:
            runs[-1].append(row)
        else:
            runs.append([row])
    return runs


def _span(run: list[dict]) -> str:
    """Label of a run: `0-27 (x28)`, `double.0-18 (x19)`, `5`."""
    first, last = run[0]["id"], run[-1]["id"]
    return first if len(run) == 1 else f"{first}-{last.rpartition('.')[2]} (x{len(run)})"


def format_table(table: dict) -> str:
    """Human-readable table in millions; consecutive blocks with identical counts share a row."""
    lines = [f"{table['class']} ({table['family']}): {_millions(table['total'])} M parameters, "
             f"{len(table['blocks'])} blocks"]
    for kind, rows in groupby(table["blocks"], key=lambda b: b["kind"]):
        rows = list(rows)
        parts = list(rows[0]["parts"])
        header = ["blocks", *parts, "total"]
        body = []
        for run in _runs(rows):
            body.append([_span(run), *(_millions(run[0]["parts"].get(p, 0)) for p in parts), _millions(run[0]["total"])])
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines.append("")
        lines.append(f"{kind} blocks (M)")
        for r in [header, *body]:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    lines.append("")
    lines.append(f"blocks {_millions(table['blocks_total'])} M + outside blocks {_millions(table['outside_blocks'])} M"
                 f" = total {_millions(table['total'])} M")
    return "\n".join(lines)
