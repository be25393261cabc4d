"""The compress stage's work: the student of one operator, its size, and its figures before retraining.

    values = run_compress(params, out_dir="models/students/compressed", tracker=run)

The blocks are the `score` stage's selection unless `compress.blocks` names them. The student is
saved with `save_student` (safetensors + compression manifest in teacher block ids) and measured
on the score stage's reference prompts and seeds: CMMD against the reference images and CLIP score
against the prompts, the same figures the score stage reports for a selection.
"""

from __future__ import annotations

import json
from pathlib import Path

from ditcompress.compress.removal import remove_blocks
from ditcompress.compress.student import save_student
from ditcompress.compress.svd import svd_compress
from ditcompress.errors import UserError
from ditcompress.models.accounting import teacher_parameters
from ditcompress.models.presets import teacher_preset
from ditcompress.score.probe import n_params
from ditcompress.score.run import build_probe
from ditcompress.score.selection import check_blocks, check_k
from ditcompress.utils.logging import get_logger

log = get_logger(__name__)


def selected_blocks(cfg) -> list[str]:
    """`compress.blocks`, or the blocks of the score stage's selection file."""
    if cfg.blocks:
        return list(cfg.blocks)
    path = Path(cfg.selection)
    if not path.is_file():
        raise UserError(f"compress.selection: {path}: no selection (run `dvc repro score` or set compress.blocks)")
    return list(json.loads(path.read_text())["blocks"])


def run_compress(params, out_dir: str | Path, tracker=None) -> dict:
    """Compress the teacher (or `compress.student`), save the student, return its summary metrics."""
    cfg = params.compress
    # the probe renders with the model it loads: the starting point of this round
    probe = build_probe(params.model_copy(update={"score": params.score.model_copy(
        update={"student": cfg.student, "criteria": ["metric"]})}), None)
    model = probe.transformer
    blocks = selected_blocks(cfg)
    check_blocks(blocks, probe.blocks, "compress.blocks" if cfg.blocks else f"{cfg.selection}: blocks")
    check_k(len(blocks), len(probe.blocks), cfg.method)
    if cfg.method == "remove":
        student, record = remove_blocks(model, blocks)
    else:
        student, record = svd_compress(model, blocks, cfg.ratio)
    save_student(student, out_dir, record)

    total = teacher_parameters(teacher_preset(params.model))
    kept = n_params(student)
    with probe.renderer.using(student):
        images = probe.render(list(probe.reference.prompts), probe.seeds, desc="render student")
    cmmd, clip = probe.score_images(images)
    summary = {"params": kept, "teacher_params": total, "kept_fraction": kept / total,
               "removed_params": n_params(model) - kept, "blocks": len(blocks), "cmmd": cmmd, "clip_score": clip}
    if tracker is not None:
        tracker.log_dict({"method": cfg.method, "blocks": blocks, "record": record.to_json()}, "compress/student.json")
    log.info("compress: %s %s -> %s (%d parameters, %.1f%% of the teacher; CMMD %.4f, CLIP score %.2f)",
             cfg.method, ", ".join(blocks), out_dir, kept, 100 * kept / total, cmmd, clip)
    return summary
