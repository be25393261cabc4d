"""The evaluate stage's work: render every benchmark's images for each model, resumably, then score them.

    values = run_evaluate(params, out_dir="data/eval", tracker=run)

Models are the preset's teacher and the students named in `evaluate.students`
(name -> student directory saved by `ditcompress.compress.save_student`, run inside the
teacher's pipeline). For each model and each prompt group (`prompts` = the reference set's
captions for CMMD / CLIP score / Fréchet distances; `geneval`, `dpg`, `hps` = the benchmarks'
own prompts) the images go to

    <out_dir>/<model>/<group>/<index:05d>.png      index = position in the group's item list
    <out_dir>/<model>/settings.json                what the images were made with

Image `index` of a group is generated from its own CPU generator seeded with
`seed_for(generate.seed, "<group>/<index>")`, so any image can be regenerated alone and the
batch size does not change the pixels. A rerun generates only the images that are missing; if
the model weights, the sampler settings or the prompts differ from `settings.json`, the model's
folder is deleted and rendered anew (the output follows params.yaml, as DVC expects).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ditcompress.data.config import GenerateConfig, fingerprint, for_preset
from ditcompress.data.shards import atomic_write, seed_for
from ditcompress.errors import UserError
from ditcompress.metrics.base import ImageSet, MetricsError, resolve_device
from ditcompress.metrics.registry import build_evaluators, evaluate
from ditcompress.models.accounting import teacher_parameters
from ditcompress.models.presets import teacher_preset
from ditcompress.sampling import Renderer, image_seeds
from ditcompress.utils.digest import model_digest
from ditcompress.utils.logging import get_logger, progress

log = get_logger(__name__)

SETTINGS_FILE = "settings.json"
PROMPTS_GROUP = "prompts"
GRID_IMAGES = 16


def load_reference(path: str | Path, captions: str | Path | None = None, limit: int | None = None) -> ImageSet:
    """The reference image set with one caption per image (CMMD / Fréchet reference, CLIP-score prompts).

    A shapes-world split carries its captions; any other source (image folder, .tar shards)
    needs a caption set in the caption stage's format (`captions`).
    """
    from ditcompress.data.caption import read_captions
    from ditcompress.data.sources import open_source

    source = open_source(path)
    table = read_captions(captions) if captions is not None else None
    ids = source.ids()[:limit]
    images, prompts = [], []
    for item_id in ids:
        image, meta = source.load(item_id)
        caption = (meta or {}).get("caption") if table is None else table.get(item_id)
        if not caption:
            where = f"in {captions}" if table is not None else "(set evaluate.reference_captions)"
            raise UserError(f"{path}: reference image {item_id!r} has no caption {where}")
        images.append(np.asarray(image.convert("RGB")))
        prompts.append(caption)
    if not images:
        raise UserError(f"{path}: no reference images")
    return ImageSet(images, prompts, f"reference:{Path(path).resolve()}:{len(images)}")


def prompt_groups(evaluators: dict, reference: ImageSet | None) -> dict[str, list[str]]:
    """Group name -> the prompt of every image to render for it (benchmarks repeat prompts)."""
    groups: dict[str, list[str]] = {}
    for name, ev in evaluators.items():
        group = ev.benchmark or PROMPTS_GROUP
        if group in groups:
            continue
        if group == PROMPTS_GROUP:
            if reference is None or reference.prompts is None:
                raise MetricsError(f"{name}: needs the reference set's captions as prompts")
            groups[group] = list(reference.prompts)
        else:
            groups[group] = [it["prompt"] for it in ev.items()]
    return groups


def _prompts_digest(prompts: list[str]) -> str:
    return hashlib.sha1("\n".join(prompts).encode()).hexdigest()


def prepare_folder(folder: Path, settings: dict) -> None:
    """Keep `folder` if it was rendered with `settings`, else delete it; then record them."""
    path = folder / SETTINGS_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old == settings:
            return
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        log.warning("%s: rendered with other %s; deleting it and rendering anew", folder, ", ".join(changed))
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        log.warning("%s: holds images but no %s; deleting it and rendering anew", folder, SETTINGS_FILE)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write((json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())


def image_path(folder: Path, group: str, index: int) -> Path:
    return folder / group / f"{index:05d}.png"


def render(renderer, groups: dict[str, list[str]], folder: Path, seed: int, desc: str = "render") -> int:
    """Render every missing image of every group into `folder`; returns how many were made.

    Image `index` of a group comes from `seed_for(seed, "<group>/<index>")`, as in `model_geneval`.
    """
    todo = [(g, i) for g, prompts in groups.items() for i in range(len(prompts))
            if not image_path(folder, g, i).is_file()]
    if not todo:
        return 0
    bar = progress(total=len(todo), desc=desc, unit="img")
    step = renderer.settings.batch_size
    for s in range(0, len(todo), step):
        batch = todo[s : s + step]
        images = renderer.render([groups[g][i] for g, i in batch], [seed_for(seed, f"{g}/{i}") for g, i in batch])
        for (g, i), pixels in zip(batch, images):
            path = image_path(folder, g, i)
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as f:
                Image.fromarray(pixels).save(f, format="PNG")
        bar.update(len(batch))
    bar.close()
    return len(todo)


def model_geneval(renderer, evaluator, seed: int, *, desc: str | None = None) -> dict[str, float]:
    """GenEval of the renderer's model at `evaluator.images_per_prompt` seeds per prompt, in memory.

    The images are those `run_evaluate` renders for its `geneval` group (same per-image seeds), so
    both give a model the same figure; `Renderer.using(student)` scores another transformer.
    """
    prompts = [it["prompt"] for it in evaluator.items()]
    bar = progress(total=len(prompts), desc=desc, unit="img", disable=desc is None)
    images = renderer.render(prompts, image_seeds(seed, evaluator.benchmark, len(prompts)), bar=bar)
    bar.close()
    return evaluator.run(images)


def load_model(preset, student: str | None, cfg: GenerateConfig, device):
    """A renderer of the teacher pipeline, with a student's transformer in place of the teacher's when given."""
    transformer = None
    if student is not None:
        from ditcompress.compress.student import load_student

        if not Path(student).is_dir():
            raise UserError(f"evaluate.students: {student}: student directory not found")
        transformer = load_student(student, torch_dtype=getattr(torch, cfg.torch_dtype))
    return Renderer.load(preset.pretrained, preset.family, cfg, device, transformer=transformer)


def _size(student: str | None, total: int) -> dict[str, float]:
    """The model's parameter count and its fraction of the teacher's (a student's from its config, no weights read)."""
    if student is None:
        return {"params": total, "kept_fraction": 1.0}
    from ditcompress.compress.student import build_student

    n = sum(p.numel() for p in build_student(student).parameters())
    return {"params": n, "kept_fraction": n / total}


def shapes_overrides(params, preset, metrics) -> dict[str, dict]:
    """The shapes world's exact detector for GenEval and DPG (it knows the world's vocabulary, data.shapes)."""
    cfg, overrides = params.evaluate, {}
    if preset.shapes_world:
        from ditcompress.metrics.vqa import DetectorVQA
        from ditcompress.shapes.detector import ShapesDetector

        if "geneval" in metrics and cfg.geneval.detector == "shapes":
            overrides["geneval"] = {"detector": ShapesDetector(params.data)}
        if "dpg" in metrics and cfg.dpg.vqa == "shapes":
            overrides["dpg"] = {"vqa": DetectorVQA(ShapesDetector(params.data))}
    return overrides


def run_evaluate(params, out_dir: str | Path = "data/eval", tracker=None,
                 on_grid: Callable[[str, object], None] | None = None,
                 models: dict[str, str | None] | None = None) -> dict[str, dict[str, float]]:
    """Render and score the teacher and every configured student; {model: {metric: value}}.

    `models` ({name: student directory, None for the teacher}) replaces that list (a schedule's rounds).
    """
    from ditcompress.utils.grid import sample_grid

    cfg, out_dir = params.evaluate, Path(out_dir)
    preset = teacher_preset(params.model)
    gen = for_preset(params.generate, preset)
    device = resolve_device(cfg.device)
    evaluators = build_evaluators(cfg, overrides=shapes_overrides(params, preset, cfg.metrics))
    needs_reference = any(ev.needs_reference or (ev.benchmark is None) for ev in evaluators.values())
    reference = (load_reference(cfg.reference, cfg.reference_captions, cfg.reference_images)
                 if needs_reference else None)
    groups = prompt_groups(evaluators, reference)

    sampler = {k: v for k, v in fingerprint(gen).items() if k not in ("num_images", "shard_size", "image_format")}
    models = {"teacher": None, **cfg.students} if models is None else models
    total = teacher_parameters(preset)
    results: dict[str, dict[str, float]] = {}
    for name, student in models.items():
        folder = out_dir / name
        settings = {"teacher": preset.pretrained, "teacher_digest": model_digest(preset.pretrained),
                    "student": student, "student_digest": model_digest(student) if student else None,
                    "sampler": sampler, "prompts": {g: _prompts_digest(p) for g, p in groups.items()}}
        prepare_folder(folder, settings)
        missing = sum(not image_path(folder, g, i).is_file() for g, ps in groups.items() for i in range(len(ps)))
        if missing:
            renderer = load_model(preset, student, gen, device)
            made = render(renderer, groups, folder, gen.seed, desc=f"render {name}")
            del renderer
            log.info("evaluate: %s: rendered %d images", name, made)
        for group, prompts in groups.items():
            picked = list(range(0, len(prompts), max(1, len(prompts) // GRID_IMAGES)))[:GRID_IMAGES]
            grid = sample_grid([Image.open(image_path(folder, group, i)).convert("RGB") for i in picked],
                               [prompts[i] for i in picked])
            if tracker is not None:
                tracker.log_image(grid, f"samples/{name}_{group}.png")
            if on_grid is not None:
                on_grid(f"{name}_{group}", grid)
        values = evaluate(evaluators, image_dir=folder, prompts=reference.prompts if reference else None,
                          reference=reference)
        values.update(_size(student, total))
        results[name] = values
        log.info("evaluate: %s: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))
    return results
