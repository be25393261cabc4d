"""The distill stage's work: recover a compressed student by knowledge distillation from its teacher.

    values = run_distill(params, out_dir="models/students/distilled", work_dir="data/distill", tracker=run)

It loads the teacher pipeline and the compress stage's student, encodes the protocol's data sets
once (`distill.data`), trains through the phases (`distill.train`), saves the student with its
compression record, and renders a teacher | student grid on reference prompts. The checkpoint of
an unfinished run lives in `distill.checkpoint_dir`, one folder per settings and inputs, and is
removed once the student is saved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from ditcompress.compress.mapping import feature_mapping
from ditcompress.compress.record import record_of
from ditcompress.data.config import fingerprint, for_preset
from ditcompress.distill.config import recipe_for
from ditcompress.errors import UserError
from ditcompress.models.accounting import teacher_parameters
from ditcompress.models.presets import teacher_preset
from ditcompress.sampling import Renderer, image_seeds
from ditcompress.utils.digest import model_digest
from ditcompress.utils.logging import get_logger

log = get_logger(__name__)


def checkpoint_dir(cfg, key: dict) -> Path:
    """`<distill.checkpoint_dir>/<digest of the settings and inputs>`: one folder per run.

    Outside DVC's outputs on purpose: `dvc exp run` restores a stage's outputs to the baseline
    before it runs, which would replace a killed experiment's checkpoint with the baseline's.
    """
    from ditcompress.distill.train import NOT_IN_KEY

    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in NOT_IN_KEY}
    digest = hashlib.sha256(json.dumps({**key, "settings": settings}, sort_keys=True).encode()).hexdigest()
    return Path(cfg.checkpoint_dir) / digest[:16]


def load_setup(params, renderer, student_dir: str | Path, cfg):
    """Teacher, student (float32, the master weights), objective and feature pairs for the loop."""
    from ditcompress.compress.stage import same_teacher
    from ditcompress.compress.student import load_student
    from ditcompress.distill.train import Setup

    preset = teacher_preset(params.model)
    if not Path(student_dir).is_dir():
        raise UserError(f"distill.student: {student_dir}: student directory not found (run `dvc repro compress`)")
    student = load_student(student_dir, torch_dtype=torch.float32)
    record = record_of(student)
    if not same_teacher(record.teacher, preset.pretrained):
        raise UserError(f"distill.student: {student_dir} was compressed from {record.teacher!r}, not from the "
                        f"teacher {preset.pretrained!r} of model.preset")
    adapter, teacher = renderer.adapter, renderer.pipeline.transformer
    if record.family != adapter.name:
        raise UserError(f"distill.student: {student_dir} is a {record.family} student, the teacher is {adapter.name}")
    teacher_ids = [r.id for r in adapter.blocks(teacher)]
    pairs = feature_mapping(teacher_ids, record, mode=cfg.mapping)
    objective = adapter.objective(renderer.pipeline.scheduler.config, weighting=cfg.timestep_sampling)
    return Setup(adapter, objective, teacher, student, record, pairs)


def run_distill(params, out_dir: str | Path, work_dir: str | Path = "data/distill", tracker=None,
                plots_dir: str | Path | None = None, *, stop_after: int | None = None, student: str | None = None,
                steps: dict[str, int] | None = None) -> dict:
    """Distil `distill.student` from the teacher; save it to `out_dir`; return its summary metrics.

    `student` and `steps` replace `distill.student` and the recipe's phase steps (a schedule's round).
    """
    from ditcompress.compress.student import save_student
    from ditcompress.distill.data import cached_set, domain_items, laion_items
    from ditcompress.distill.train import distill
    from ditcompress.metrics.base import resolve_device

    cfg = recipe_for(params.distill, params.model.preset)
    override = {"student": student, "steps": steps}
    cfg = cfg.model_copy(update={k: v for k, v in override.items() if v is not None})
    preset = teacher_preset(params.model)
    gen = for_preset(params.generate, preset)
    device = resolve_device(cfg.device)
    renderer = Renderer.load(preset.pretrained, preset.family, gen, device, keep_prompts=False)
    renderer.pipeline.transformer.requires_grad_(False)
    setup = load_setup(params, renderer, cfg.student, cfg)
    phases = cfg.phases()
    if not phases:
        raise UserError(f"distill.steps: the {cfg.protocol} protocol has no phase with steps > 0")

    context = {"teacher": model_digest(preset.pretrained), "max_sequence_length": gen.max_sequence_length,
               "dtype": gen.torch_dtype}
    needed = {data for _, data, _, _ in phases}
    sets = {}
    if "laion" in needed:
        items = laion_items(params.caption.source, cfg.laion, params.caption.source_format)
        sets["laion"] = cached_set("laion", items, renderer, Path(work_dir) / "cache", context)
    if "domain" in needed:
        sets["domain"] = cached_set("domain", domain_items(cfg.domain), renderer, Path(work_dir) / "cache", context)
    key = {"teacher": context["teacher"], "student": model_digest(cfg.student),
           "data": {k: json.loads((Path(work_dir) / "cache" / f"{k}.json").read_text()) for k in sets}}

    total = teacher_parameters(preset)
    kept = sum(p.numel() for p in setup.student.parameters())
    log.info("distill: %s (%d parameters, %.1f%% of the teacher), loss %s, protocol %s: %s",
             cfg.student, kept, 100 * kept / total, cfg.loss, cfg.protocol,
             ", ".join(f"{p} {n} steps on {d}" for p, d, _, n in phases))
    started = time.perf_counter()
    history: list[dict] = []
    ckpt = checkpoint_dir(cfg, key)
    student = distill(setup, cfg, sets, ckpt, tracker, key=key, stop_after=stop_after, history=history)
    seconds = time.perf_counter() - started
    if stop_after is not None:
        return {}
    from accelerate import PartialState

    if PartialState().is_main_process:
        save_student(student.to("cpu"), out_dir, setup.record)
        shutil.rmtree(ckpt, ignore_errors=True)  # the run is complete: its student is saved
        if plots_dir is not None:
            Path(plots_dir).mkdir(parents=True, exist_ok=True)
            # the steps this invocation ran (a resumed run: those after the checkpoint)
            (Path(plots_dir) / "loss.json").write_text(json.dumps(history, indent=1) + "\n")
            if cfg.sample_prompts:
                _sample_grid(params, renderer, student, Path(plots_dir), cfg.sample_prompts, tracker)
    steps = sum(n for *_, n in phases)
    # the student's size is compress.json's (and evaluate.json's): repeating it here only adds columns to dvc exp show
    summary = {"steps": steps, "seconds": seconds, "feature_pairs": len(setup.pairs)}
    if tracker is not None:
        tracker.log_dict({"pairs": setup.pairs, "phases": phases, "recipe": cfg.model_dump(mode="json"),
                          "sampler": fingerprint(gen)}, "distill/setup.json")
    return summary


def _sample_grid(params, renderer, student, plots: Path, count: int, tracker) -> None:
    """Teacher (top row) | student (bottom row) on the first reference prompts, same seeds."""
    from ditcompress.metrics.benchmark import load_reference
    from ditcompress.utils.grid import sample_grid

    ref = load_reference(params.evaluate.reference, params.evaluate.reference_captions, limit=count)
    prompts = list(ref.prompts)
    seeds = image_seeds(params.distill.seed, "distill", len(prompts))
    teacher = renderer.render(prompts, seeds)
    with renderer.using(student):
        pupil = renderer.render(prompts, seeds)
    grid = sample_grid(list(teacher) + list(pupil), [f"teacher: {p}" for p in prompts] + ["student"] * len(prompts),
                       ncol=len(prompts))
    plots.mkdir(parents=True, exist_ok=True)
    grid.save(plots / "samples.png")
    if tracker is not None:
        tracker.log_image(grid, "distill/samples.png")
