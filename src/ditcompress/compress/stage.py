"""The compress stage's work: the student of one operator, its size, and its figures before retraining.

    values = run_compress(params, out_dir="models/students/compressed", tracker=run)

The blocks are the `score` stage's selection unless `compress.blocks` names them. Operators:
removal (eq 4.6), SVD (4.4.2) by ratio, 5.1.7 preset or explicit ranks (5.1.6), iterated SVD of a
saved SVD student (4.4.3), and GRASP (4.4.4: singular values ranked by task-loss gradients on the
generate stage's images). Every input is checked before anything is computed or written. The
student is saved with `save_student` (safetensors + compression manifest in teacher block ids)
and measured on the score stage's reference prompts and seeds: CMMD against the reference images
and CLIP score against the prompts, the same figures the score stage reports for a selection.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ditcompress.compress.errors import CompressionError
from ditcompress.compress.record import CompressionRecord
from ditcompress.compress.removal import remove_blocks
from ditcompress.compress.student import MANIFEST, save_student
from ditcompress.compress.svd import known_parts, plan, ratio_spec, svd_compress
from ditcompress.errors import UserError
from ditcompress.models.accounting import teacher_parameters
from ditcompress.models.presets import teacher_preset
from ditcompress.models.registry import adapter_for
from ditcompress.score.probe import n_params
from ditcompress.score.run import build_probe
from ditcompress.score.selection import check_blocks, check_k
from ditcompress.utils.logging import get_logger

log = get_logger(__name__)

ENCODE_BATCH = 8  # calibration images through the VAE at a time (GRASP itself takes them one by one)


def selected_blocks(cfg) -> list[str]:
    """`compress.blocks`, or the blocks of the score stage's selection file."""
    if cfg.blocks:
        return list(cfg.blocks)
    path = Path(cfg.selection)
    if not path.is_file():
        raise UserError(f"compress.selection: {path}: no selection (run `dvc repro score` or set compress.blocks)")
    return list(json.loads(path.read_text())["blocks"])


def same_teacher(recorded: str, pretrained: str) -> bool:
    """Whether a manifest's teacher (the transformer's `_name_or_path`) is the pipeline `pretrained`.

    Local teachers are recorded as `<pipeline dir>/transformer` relative to the working directory
    (stages run in the repository root): compared as resolved paths. Hub teachers load from the
    cache, `.../models--<org>--<name>/snapshots/<sha>/transformer`, or are recorded as the id itself.
    """
    path = Path(recorded)
    if path.name == "transformer":
        path = path.parent
    if Path(pretrained).is_dir():
        return bool(recorded) and path.resolve() == Path(pretrained).resolve()
    return str(path) == pretrained or "models--" + pretrained.replace("/", "--") in path.parts


def check_student(params) -> CompressionRecord | None:
    """The manifest of `compress.student` (None without one); it must come from `model`'s teacher."""
    cfg = params.compress
    if cfg.student is None:
        if cfg.method == "iterated_svd":
            raise UserError("compress.student: iterated_svd re-factorises a saved SVD student (4.4.3); "
                            "set compress.student to one")
        return None
    path = Path(cfg.student)
    if not (path / MANIFEST).is_file():
        raise UserError(f"compress.student: {path}: no {MANIFEST} (not a saved student)")
    record = CompressionRecord.load(path / MANIFEST)
    teacher = teacher_preset(params.model).pretrained
    if not same_teacher(record.teacher, teacher):
        key = "model.pretrained" if params.model.pretrained is not None else f"model.preset {params.model.preset!r}"
        raise UserError(f"compress.student: {path} was compressed from teacher {record.teacher!r}, "
                        f"but {key} is {teacher!r}")
    return record


def check_svd(cfg, model, blocks: list[str], record: CompressionRecord | None):
    """The SVD spec (ratio with ranks over it) after checking it against the model; no layer is touched."""
    if cfg.method == "iterated_svd" and not any(k.startswith(f"{b}.") for k in record.svd for b in blocks):
        raise UserError(f"compress.student: {cfg.student} has no factorised layer in blocks {', '.join(blocks)} "
                        "(iterated_svd needs an SVD student; use svd to factorise them first)")
    adapter = adapter_for(model)
    known = known_parts(adapter)
    ratio = cfg.svd_ratio()
    keys = {"compress.ratio": ratio if isinstance(ratio, dict) else {}, "compress.ranks": cfg.ranks or {}}
    for name, spec in keys.items():
        bad = next((k for k in spec if k not in known), None)
        if bad is not None:
            raise UserError(f"{name}: unknown part or group {bad!r} for {adapter.name} "
                            f"(known: {', '.join(sorted(known))})")
    spec = ratio_spec(ratio, cfg.ranks)
    try:
        targets = plan(model, blocks, spec)  # checks every explicit rank against its layer's shape
    except CompressionError as err:
        raise UserError(f"compress.ranks: {err}") from None
    if not targets:
        raise UserError(f"compress.ratio: {spec} selects no linear layer in blocks {', '.join(blocks)}")
    return spec


def grasp_times(objective, n: int) -> torch.Tensor:
    """`n` evenly spaced training times, the midpoints of n equal bins of the family's native scale:
    DDPM steps of [0, T) (n = T: every step, as the thesis) or flow σ in (0, 1)."""
    mid = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    steps = getattr(objective, "num_train_timesteps", None)
    if steps is None:
        return mid.float()
    if n > steps:
        raise UserError(f"compress.grasp_timesteps: {n} exceeds the teacher's {steps} training timesteps")
    return (mid * steps).long()


def grasp_calibration(params, renderer):
    """(objective, calibration batches, times, noise generator) of GRASP on the generate stage's images."""
    from ditcompress.data.dataset import TeacherDataset
    from ditcompress.data.latents import teacher_batches

    cfg = params.compress
    if not Path(cfg.grasp_data).is_dir():
        raise UserError(f"compress.grasp_data: {cfg.grasp_data}: no generated dataset (run `dvc repro generate`)")
    have = len(TeacherDataset(cfg.grasp_data))
    if have < cfg.grasp_images:
        raise UserError(f"compress.grasp_images: {cfg.grasp_images} images asked, but {cfg.grasp_data} has {have}")
    objective = renderer.adapter.objective(dict(renderer.pipeline.scheduler.config))
    times = grasp_times(objective, cfg.grasp_timesteps)
    # a divisor of grasp_images: the first epoch alone yields the images, none twice
    batch = max(d for d in range(1, ENCODE_BATCH + 1) if cfg.grasp_images % d == 0)
    batches = teacher_batches(renderer, cfg.grasp_data, batch, cfg.seed)
    return objective, batches, times, torch.Generator().manual_seed(cfg.seed)


def run_compress(params, out_dir: str | Path, tracker=None) -> dict:
    """Compress the teacher (or `compress.student`), save the student, return its summary metrics."""
    cfg = params.compress
    record = check_student(params)  # before loading: another teacher's student may not even load
    # the probe renders with the model it loads: the starting point of this round
    probe = build_probe(params.model_copy(update={"score": params.score.model_copy(
        update={"student": cfg.student, "criteria": ["metric"]})}), None)
    model = probe.transformer
    blocks = selected_blocks(cfg)
    check_blocks(blocks, probe.blocks, "compress.blocks" if cfg.blocks else f"{cfg.selection}: blocks")
    check_k(len(blocks), len(probe.blocks), "remove" if cfg.method == "remove" else "svd")
    if cfg.method == "remove":
        student, record = remove_blocks(model, blocks)
    else:
        spec = check_svd(cfg, model, blocks, record)
        scores = None
        if cfg.method == "grasp":
            from ditcompress.compress.grasp import grasp_scores

            objective, batches, times, generator = grasp_calibration(params, probe.renderer)
            scores = grasp_scores(model, objective, batches, blocks, spec, timesteps=times,
                                  num_samples=cfg.grasp_images, timestep_batch=cfg.grasp_timestep_batch,
                                  generator=generator, accumulate=cfg.grasp_accumulate)
        student, record = svd_compress(model, blocks, spec, scores=scores)
    save_student(student, out_dir, record)

    total = teacher_parameters(teacher_preset(params.model))
    kept = n_params(student)
    with probe.renderer.using(student):
        images = probe.render(list(probe.reference.prompts), probe.seeds, desc="render student")
    cmmd, clip = probe.score_images(images)
    summary = {"params": kept, "teacher_params": total, "kept_fraction": kept / total,
               "removed_params": n_params(model) - kept, "blocks": len(blocks), "cmmd": cmmd, "clip_score": clip}
    if tracker is not None:
        tracker.log_dict({"method": cfg.method, "blocks": blocks, "ratio": cfg.ratio, "ranks": cfg.ranks,
                          "record": record.to_json()}, "compress/student.json")
    log.info("compress: %s %s -> %s (%d parameters, %.1f%% of the teacher; CMMD %.4f, CLIP score %.2f)",
             cfg.method, ", ".join(blocks), out_dir, kept, 100 * kept / total, cmmd, clip)
    return summary
