"""The score stage's work: every criterion of every block, one selection, the files and figures.

    values = run_score(params, out_dir="data/score", tracker=run)

Writes `<out_dir>/importance.json` (every criterion per block), `<out_dir>/selection.json` (the
chosen blocks and what they score together) and `<out_dir>/plots/` (figures and the per-block
table DVC plots). `<out_dir>/measurements.json` memoises every measured subset and
`<out_dir>/optuna.db` holds the Optuna study, so a killed stage resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ditcompress.data.config import fingerprint, for_preset
from ditcompress.data.shards import atomic_write
from ditcompress.errors import UserError
from ditcompress.metrics.base import resolve_device
from ditcompress.metrics.benchmark import load_model, load_reference, shapes_overrides
from ditcompress.metrics.registry import evaluator_options, get_evaluator
from ditcompress.models.accounting import teacher_parameters
from ditcompress.models.presets import teacher_preset
from ditcompress.sampling import image_seeds
from ditcompress.score import criteria as crit
from ditcompress.score import selection as algos
from ditcompress.score.probe import Probe, n_params
from ditcompress.utils.digest import model_digest
from ditcompress.utils.logging import get_logger, progress

log = get_logger(__name__)

KEEP = ("measurements.json", "optuna.db")  # what survives a rerun (resume state, keyed by its settings)
# generate keys that shape a dataset, not an image (per-image seeds: the batch size changes no pixel)
DATASET_ONLY = ("num_images", "shard_size", "image_format", "batch_size")
STRIP_PROMPTS = 4  # prompts of the fig 5.1 / 5.6 image strips

# criterion -> importance (higher = more important), for ranking and for Spearman's rho vs damage
IMPORTANCE = {
    "magnitude": lambda c: c["magnitude"],
    "cka": lambda c: c["cka_intensity"],
    "cmmd": lambda c: c["cmmd"],
    "clip_score": lambda c: {b: -v for b, v in c["clip_score"].items()},
    "rank_sum": lambda c: c["rank_sum"],
    "cmmd_per_param": lambda c: c["cmmd_per_param"],
    "damage": lambda c: c["damage"],
}


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _images_digest(images) -> str:
    """Content digest of an image set: the memo must not depend on where the checkout lives."""
    h = hashlib.sha1()
    for im in images:
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()


def _clean(out: Path) -> None:
    """Empty the output folder but for the resume state."""
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():
        if p.name not in KEEP:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _write_json(path: Path, obj) -> None:
    with atomic_write(path) as f:
        f.write((json.dumps(obj, indent=2) + "\n").encode())


def run_score(params, out_dir: str | Path = "data/score", tracker=None, plots_dir: str | Path | None = None) -> dict:
    """Score every block of the teacher (or `score.student`) and select the blocks to modify.

    Figures go to `<plots_dir>/figures/`, the per-block table of DVC's plots to
    `<plots_dir>/blocks.json` (default `<out_dir>/plots`).
    """
    started = time.time()
    cfg, sel = params.score, params.score.selection
    out = Path(out_dir)
    plots = Path(plots_dir) if plots_dir is not None else out / "plots"
    preset = teacher_preset(params.model)
    probe = build_probe(params, out, before_work=lambda blocks: (_check_selection(cfg, blocks), _clean(out),
                                                                 _clean(plots)))
    renderer, blocks = probe.renderer, probe.blocks
    adapter, model = renderer.adapter, renderer.pipeline.transformer

    total = teacher_parameters(preset)
    now = n_params(model)
    importance = _criteria(cfg, adapter, model, blocks, probe)
    importance.update(family=adapter.name, model=cfg.student or preset.pretrained, teacher_params=total,
                      model_params=now)
    selection = _select(params, blocks, probe, importance, renderer, tracker)
    chosen = selection.to_json()
    chosen.update(criterion=sel.criterion, modification=cfg.modification, teacher_params=total,
                  ratios={b: (1.0 if cfg.modification == "remove" else cfg.c_fixed) for b in selection.blocks},
                  kept_fraction=(now - selection.removed_params) / total, model_kept_fraction=now / total)

    _write_json(out / "importance.json", importance)
    _write_json(out / "selection.json", chosen)
    figures = _figures(importance, chosen, probe, blocks, plots)
    summary = _summary(importance, chosen, probe, time.time() - started)
    if tracker is not None:
        tracker.log_dict(importance, "score/importance.json")
        tracker.log_dict(chosen, "score/selection.json")
        for path in figures:
            tracker.log_artifact(path, "score")
    log.info("score: selected %s (%s, CMMD %.4f, %.1f%% of the teacher's parameters kept) in %.0f s",
             ", ".join(selection.blocks), selection.algorithm, selection.cmmd, 100 * chosen["kept_fraction"],
             time.time() - started)
    return summary


def build_probe(params, out_dir: str | Path | None, before_work=None) -> Probe:
    """The model of `score.student` (or the teacher) in its pipeline, ready to measure block subsets.

    `before_work(block ids)` runs once the blocks are known and before anything is rendered
    (the stage checks the selection there and empties its folders). The memo lives in
    `<out_dir>/measurements.json`, keyed by everything that decides a measurement (None: no memo).
    """
    cfg, ev = params.score, params.evaluate
    preset = teacher_preset(params.model)
    gen = for_preset(params.generate.model_copy(update={"batch_size": cfg.batch_size}), preset)
    renderer = load_model(preset, cfg.student, gen, resolve_device(cfg.device))
    blocks = [r.id for r in renderer.adapter.blocks(renderer.pipeline.transformer)]
    if before_work is not None:
        before_work(blocks)
    reference = load_reference(ev.reference, ev.reference_captions, limit=cfg.prompts)
    if len(reference) < cfg.prompts:
        raise UserError(f"score.prompts: {cfg.prompts} prompts asked, but {ev.reference} has "
                        f"{len(reference)} reference images")
    seeds = image_seeds(cfg.seed, "score", len(reference))
    cmmd = get_evaluator("cmmd", **evaluator_options("cmmd", ev))
    clip = get_evaluator("clip_score", **evaluator_options("clip_score", ev))
    geneval = None
    if "damage" in cfg.criteria:
        options = {**evaluator_options("geneval", ev), "images_per_prompt": cfg.damage_images_per_prompt,
                   **shapes_overrides(params, preset, ["geneval"]).get("geneval", {})}
        geneval = get_evaluator("geneval", **options)
    context = _digest({"teacher": model_digest(preset.pretrained), "student": cfg.student and model_digest(cfg.student),
                       "sampler": {k: v for k, v in fingerprint(gen).items() if k not in DATASET_ONLY},
                       "prompts": list(reference.prompts), "seeds": seeds, "reference": _images_digest(reference.images),
                       "cmmd": evaluator_options("cmmd", ev), "clip": evaluator_options("clip_score", ev),
                       "geneval": geneval and geneval.items(), "damage_images": cfg.damage_images_per_prompt})
    probe = Probe(renderer, reference, seeds, cmmd=cmmd, clip_score=clip, modification=cfg.modification,
                  c_fixed=cfg.c_fixed, geneval=geneval, geneval_seed=cfg.seed,
                  cache_file=None if out_dir is None else Path(out_dir) / "measurements.json", context=context)
    return probe


def _check_selection(cfg, blocks: list[str]) -> None:
    """Errors a user can make in params that only the model's blocks reveal, before any work."""
    sel = cfg.selection
    if sel.algorithm == "manual":
        algos.check_blocks(sel.blocks, blocks)
        algos.check_k(len(sel.blocks), len(blocks), cfg.modification)
    elif sel.k is not None:
        algos.check_k(sel.k, len(blocks), cfg.modification)
    if sel.algorithm == "exhaustive":
        algos.check_subsets(len(blocks), sel.k, sel.max_subsets)
    if sel.algorithm == "tinyfusion":
        from ditcompress.score.tinyfusion import check_groups

        check_groups(len(blocks), sel.k, sel.tinyfusion.group_size)


def _criteria(cfg, adapter, model, blocks: list[str], probe: Probe) -> dict:
    """importance.json's content: every selected criterion per block."""
    c: dict = {}
    doc = {"blocks": blocks, "modification": cfg.modification, "c_fixed": cfg.c_fixed, "criteria": c}
    doc["params"] = {r.id: n_params(r.module) for r in adapter.blocks(model)}
    doc["removed_params"] = {b: probe.removed_params([b]) for b in blocks}
    if "magnitude" in cfg.criteria:
        c["magnitude"] = crit.block_magnitude(model)
    if "cka" in cfg.criteria or "rms" in cfg.criteria:
        n = min(cfg.cka_prompts, len(probe.seeds))
        with crit.collect_features(adapter, model, blocks) as stats:
            probe.render(list(probe.reference.prompts[:n]), probe.seeds[:n], desc="cka/rms")
        if "cka" in cfg.criteria:
            c["cka"] = {b: stats.mean("cka", b) for b in blocks}
            c["cka_intensity"] = {b: 1 - v for b, v in c["cka"].items()}
            text = {b: stats.mean("cka_text", b) for b in blocks if stats.has("cka_text", b)}
            if text:
                c["cka_text"] = text
            doc["cka_matrix"] = {"timesteps": stats.timesteps,
                                 "values": {b: [stats.mean("cka", b, t) for t in stats.timesteps] for b in blocks}}
        if "rms" in cfg.criteria:
            c["rms"] = {b: stats.mean("rms", b) for b in blocks}
    base = probe.measure([], desc="unmodified")
    doc["reference"] = {"cmmd": base.cmmd, "clip_score": base.clip_score}
    if "metric" in cfg.criteria:
        single = {b: probe.measure([b], desc=f"{cfg.modification} {b}") for b in progress(blocks, desc="metric", unit="block")}
        c["cmmd"] = {b: m.cmmd for b, m in single.items()}
        c["clip_score"] = {b: m.clip_score for b, m in single.items()}
        c["rank_sum"] = crit.rank_sum(c["cmmd"], c["clip_score"])
        if "cmmd_per_param" in cfg.criteria:  # eq 4.15: CMMD_i / (P_i · c_fixed), the parameters modification removes
            c["cmmd_per_param"] = {b: m.cmmd / max(m.removed_params, 1) for b, m in single.items()}
    if "damage" in cfg.criteria:
        doc["reference"]["geneval"] = probe.geneval([], desc="geneval unmodified")
        c["geneval"] = {b: probe.geneval([b], desc=f"geneval {cfg.modification} {b}") for b in blocks}
        c["damage"] = {b: doc["reference"]["geneval"] - v for b, v in c["geneval"].items()}
        doc["spearman"] = {name: crit.spearman(f(c), c["damage"]) for name, f in IMPORTANCE.items()
                           if name != "damage" and _has(c, name)}
    return doc


def _has(c: dict, name: str) -> bool:
    needs = {"cka": "cka_intensity"}.get(name, name)
    return needs in c


def _select(params, blocks: list[str], probe: Probe, importance: dict, renderer, tracker) -> algos.Selection:
    """Run `score.selection.algorithm`."""
    cfg, sel = params.score, params.score.selection
    measure = lambda subset: probe.measure(subset)  # noqa: E731
    total = importance["teacher_params"]
    if sel.algorithm == "manual":
        m = probe.measure(sel.blocks, desc="manual")
        return algos.Selection("manual", list(sel.blocks), m.cmmd, m.clip_score, m.removed_params)
    if sel.algorithm == "ranking":
        scores = IMPORTANCE[sel.criterion](importance["criteria"])
        picked = algos.ranking(scores, sel.k)
        m = probe.measure(picked, desc="ranking")
        return algos.Selection("ranking", picked, m.cmmd, m.clip_score, m.removed_params)
    if sel.algorithm in ("greedy", "optuna"):
        # the kept fraction counts what earlier rounds removed: the probed model is already smaller
        greedy = algos.greedy(blocks, measure, criterion=sel.criterion if sel.algorithm == "greedy" else "rank_sum",
                              k=sel.k, total_params=total, target=sel.target,
                              cmmd_threshold=sel.cmmd_threshold, modification=cfg.modification,
                              offset=total - importance["model_params"])
        if tracker is not None:
            for i, it in enumerate(greedy.iterations):
                tracker.log_metrics({"greedy/cmmd": it["cmmd"], "greedy/clip_score": it["clip_score"]}, step=i)
        if sel.algorithm == "greedy":
            return greedy
        out = Path(probe.cache_file).parent
        study = f"{probe.context}:{cfg.modification}:{cfg.c_fixed}:k{sel.k}:seed{cfg.seed}"
        log_trial = (lambda t: tracker.log_metrics({"optuna/cmmd": t["cmmd"]}, step=t["number"])) if tracker else None
        result = algos.optuna_search(blocks, measure, sel.k, n_trials=sel.n_trials, seed=cfg.seed,
                                     prior=greedy.blocks, storage=f"sqlite:///{(out / 'optuna.db').resolve()}",
                                     study_name=study, on_trial=log_trial)
        result.greedy = {"blocks": greedy.blocks, "cmmd": greedy.cmmd, "clip_score": greedy.clip_score}
        result.iterations = greedy.iterations
        if tracker is not None:
            tracker.log_table(result.trials, "score/optuna_trials.json")
        return result
    if sel.algorithm == "exhaustive":
        result = algos.exhaustive(blocks, measure, sel.k, max_subsets=sel.max_subsets)
        if tracker is not None:
            tracker.log_table(result.trials, "score/exhaustive_trials.json")
        return result
    if sel.algorithm == "tinyfusion":
        return _tinyfusion(params, blocks, probe, renderer, tracker)
    raise UserError(f"score.selection.algorithm: unknown algorithm {sel.algorithm!r}")


def _tinyfusion(params, blocks, probe: Probe, renderer, tracker) -> algos.Selection:
    """Learn the masks on the generate stage's images (eq 4.5); the selection is the most probable mask."""
    from ditcompress.data.latents import teacher_batches
    from ditcompress.score.tinyfusion import learn_masks

    cfg, tf = params.score, params.score.selection.tinyfusion
    if not Path(tf.data).is_dir():
        raise UserError(f"score.selection.tinyfusion.data: {tf.data}: no generated dataset (run `dvc repro generate`)")
    model = renderer.pipeline.transformer
    objective = renderer.adapter.objective(dict(renderer.pipeline.scheduler.config))
    batches = teacher_batches(renderer, tf.data, tf.batch_size, cfg.seed)
    on_step = (lambda step, m: tracker.log_metrics({f"tinyfusion/{k}": v for k, v in m.items()
                                                    if isinstance(v, (int, float))}, step=step)) if tracker else None
    result = learn_masks(model, objective, batches, remove=cfg.selection.k, group_size=tf.group_size,
                         steps=tf.steps, lr=tf.lr, mask_lr=tf.mask_lr, lora_rank=tf.lora_rank, tau=tf.tau,
                         loss=tf.loss, teacher=model if tf.loss == "distill" else None,
                         seed=cfg.seed, on_step=on_step)
    m = probe.measure(result.removed, desc="tinyfusion")
    out = algos.Selection("tinyfusion", list(result.removed), m.cmmd, m.clip_score, m.removed_params)
    out.trials = [{"group": i, **g} for i, g in enumerate(result.groups)]
    if tracker is not None:  # the learned distribution: every candidate mask with its probability
        tracker.log_table([{"group": i, "dropped": [b for b in g["blocks"] if b not in mask], "probability": p}
                           for i, g in enumerate(result.groups) for mask, p in zip(g["masks"], g["probabilities"])],
                          "score/tinyfusion_masks.json")
    return out


def _figures(importance: dict, chosen: dict, probe: Probe, blocks: list[str], plots: Path) -> list[Path]:
    """The figures and the fig 5.1 / 5.6 image strips (one image per prompt, each block modified alone)."""
    from ditcompress.score.plots import image_strip, write_score_plots
    from ditcompress.score.probe import modified

    paths = write_score_plots(importance, chosen, plots / "figures")
    blocks_json = plots / "figures" / "blocks.json"  # the plot writer's table goes beside the PNGs
    if blocks_json.is_file():
        blocks_json.replace(plots / "blocks.json")
        paths = [plots / "blocks.json" if p == blocks_json else p for p in paths]
    n = min(STRIP_PROMPTS, len(probe.seeds))
    prompts, seeds = list(probe.reference.prompts[:n]), probe.seeds[:n]
    base = probe.render(prompts, seeds)
    for modification in ("remove", "svd"):
        if modification == "remove" and len(blocks) < 2:
            continue  # a one-block model cannot lose its block
        rows = {"teacher": list(base)}
        for b in progress(blocks, desc=f"strip {modification}", unit="block"):
            with modified(probe.transformer, [b], modification, probe.c_fixed):
                rows[f"{modification} {b}"] = list(probe.render(prompts, seeds))
        path = plots / "figures" / f"strip_{modification}.png"
        image_strip(rows, prompts).save(path)
        paths.append(path)
    return paths


def _summary(importance: dict, chosen: dict, probe: Probe, seconds: float) -> dict:
    """metrics/score.json: the unmodified model, the selection, each criterion's rho vs damage."""
    summary = {"reference": importance["reference"],
               "selection": {"cmmd": chosen["cmmd"], "clip_score": chosen["clip_score"],
                             "blocks": len(chosen["blocks"]), "removed_params": chosen["removed_params"],
                             "kept_fraction": chosen["kept_fraction"]},
               "renders": probe.evaluations, "time_s": round(seconds, 1)}
    if "spearman" in importance:  # nan (a constant criterion) is no number DVC can show
        summary["spearman"] = {k: (None if v != v else v) for k, v in importance["spearman"].items()}
    return summary
