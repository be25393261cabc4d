"""The schedule stage's work: compress and retrain round by round until the target size (thesis 4.6).

    summary = run_schedule(params, out_dir="models/students/schedule", work_dir="data/schedule",
                           tracker=run, plots_dir="plots/schedule")

A round scores the current model on the reference prompts (`score.build_probe`), picks what to
compress (`plan_round`), compresses it, retrains it with `distill.run_distill` and evaluates it
with `metrics.run_evaluate`; each round is a nested MLflow run. The kinds:

- `one_shot` (4.6.1): one round, greedy selection down to the target, trained for the steps of
  `one_shot_rounds` rounds (default: as many as progressive would take, for equal total steps);
- `progressive` (4.6.2): rounds of `blocks_per_round` blocks, or of as many as it takes CMMD to
  reach `cmmd_threshold`, re-scored on the retrained model each time;
- `linear_progressive` (4.6.3): every block probed at `c_fixed`, ranked by CMMD per removed
  parameter (eq 4.15), the k least important compressed by the ratios of eq 4.16/4.19
  (`linear_ratios`), blocks compressed again in later rounds by iterated SVD (4.4.3).

Progress lives in `<schedule.checkpoint_dir>/<digest of settings and inputs>/` (state.json, each
round's students, the probes' memo), outside DVC's outputs, so a killed run resumes at the round
(and, through distill's checkpoints, at the step) where it stopped. When the schedule ends the
round students are copied to `out_dir/round-<k>` and the folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ditcompress.compress.lowrank import LowRankLinear
from ditcompress.compress.removal import remove_blocks
from ditcompress.compress.student import MANIFEST, save_student
from ditcompress.compress.svd import plan, svd_compress
from ditcompress.data.config import fingerprint, for_preset
from ditcompress.data.shards import atomic_write
from ditcompress.distill.config import recipe_for
from ditcompress.errors import UserError
from ditcompress.models.accounting import teacher_parameters
from ditcompress.models.presets import teacher_preset
from ditcompress.schedule.linear import ScheduleError, importance, linear_ratios
from ditcompress.score import selection as algos
from ditcompress.score.probe import n_params
from ditcompress.utils.digest import model_digest
from ditcompress.utils.logging import get_logger

log = get_logger(__name__)

STATE = "state.json"
METRICS = ("geneval", "cmmd", "clip_score", "dpg", "clip_fd")  # copied from evaluate into each round's row


@dataclass
class RoundPlan:
    """What one round compresses, decided before anything is compressed."""

    blocks: list[str]
    ratios: dict[str, float]  # block -> fraction of its current parameters removed (1.0: removed)
    method: str  # remove | svd
    cmmd: float | None = None  # the selection's CMMD as measured while selecting
    stopped: str = ""  # why the selection stopped (greedy), or how k was fitted (linear)
    detail: dict = field(default_factory=dict)


# ---------------------------------------------------------------- sizes and checks

def block_sizes(model) -> dict[str, int]:
    """Parameters of each block, by stable id."""
    from ditcompress.models.registry import adapter_for

    return {r.id: n_params(r.module) for r in adapter_for(model).blocks(model)}


def compressible(model, blocks=None) -> dict[str, int]:
    """P_i of eq 4.15–4.21: the weights of each block's attention and MLP linears as they are now
    (n·m dense, r·(n + m) factorised), what a ratio applies to; biases and modulation stay."""
    from ditcompress.models.registry import adapter_for

    def weights(layer) -> int:
        n, m = layer.out_features, layer.in_features
        return layer.rank * (n + m) if isinstance(layer, LowRankLinear) else n * m

    ids = [r.id for r in adapter_for(model).blocks(model)] if blocks is None else list(blocks)
    return {b: sum(weights(t.layer) for t in plan(model, [b], 0.5)) for b in ids}


def factorised(model) -> set[str]:
    """Blocks with a low-rank layer already (a progressive SVD schedule compresses each block once)."""
    from ditcompress.compress.record import record_of

    keys = record_of(model).svd
    return {b for b in block_sizes(model) if any(key.startswith(f"{b}.") for key in keys)}


def check_reachable(cfg, model, total: int) -> None:
    """One-line errors, before any work, for a target no schedule of this kind can reach from `model`."""
    now, t = n_params(model), cfg.target
    kind = cfg.kind
    if kind == "linear_progressive":
        cp = compressible(model)
        n = cfg.linear.remove * total
        if n > sum(cp.values()):
            raise ScheduleError(f"schedule.linear.remove={cfg.linear.remove}: N={n:.0f} parameters per round is "
                                f"more than the {sum(cp.values())} the blocks' attention and MLP linears hold")
        floor = (now - sum(cp.values())) / total
        if t <= floor:
            raise ScheduleError(f"schedule.target={t}: linear progressive SVD would have to remove every block's "
                                f"attention and MLP weights (what else the model holds is {floor:.1%} of the teacher)")
        return
    if cfg.method == "remove":
        sizes = block_sizes(model)
        floor = (now - (sum(sizes.values()) - min(sizes.values()))) / total
        if t < floor:
            raise ScheduleError(f"schedule.target={t}: {kind} would remove every block (removing all but the "
                                f"smallest of the {len(sizes)} blocks keeps {floor:.1%} of the teacher)")
    else:
        open_blocks = [b for b in block_sizes(model) if b not in factorised(model)]
        floor = (now - cfg.c_fixed * sum(compressible(model, open_blocks).values())) / total
        if t < floor:
            raise ScheduleError(f"schedule.target={t}: {kind} SVD at c_fixed={cfg.c_fixed} compresses each block "
                                f"once; compressing every block keeps {floor:.1%} of the teacher")


# ---------------------------------------------------------------- planning a round

def plan_round(cfg, probe, total: int, offset: int, *, rounds_done: int) -> RoundPlan:
    """The blocks (and ratios) of the next round of `cfg.kind`, measured on `probe`'s model.

    `offset`: teacher parameters already gone before this round.
    """
    model = probe.transformer
    if cfg.kind == "linear_progressive":
        return _plan_linear(cfg, probe, total, rounds_done)
    candidates = [b for b in probe.blocks if cfg.method == "remove" or b not in factorised(model)]
    stops = {"k": None, "cmmd_threshold": None} if cfg.kind == "one_shot" else \
        {"k": cfg.blocks_per_round, "cmmd_threshold": cfg.cmmd_threshold}
    sel = algos.greedy(candidates, probe.measure, criterion=cfg.criterion, total_params=total, target=cfg.target,
                       modification=cfg.method, offset=offset, desc=f"round {rounds_done + 1}: greedy", **stops)
    ratio = 1.0 if cfg.method == "remove" else cfg.c_fixed
    return RoundPlan(sel.blocks, {b: ratio for b in sel.blocks}, cfg.method, sel.cmmd, sel.stopped,
                     {"iterations": sel.iterations, "removed_params": sel.removed_params})


def _plan_linear(cfg, probe, total: int, rounds_done: int) -> RoundPlan:
    """Eq 4.15 ranking of every block probed at c_fixed, then eq 4.16/4.19 ratios for the k least important.

    The first round takes S, N and k as given: a violated eq 4.21 is the user's error. Later rounds
    (the blocks compressed so far are smaller) and the last one (N cut to what reaches the target)
    use the k' nearest k for which eq 4.21 holds, and say so in `stopped`.
    """
    model = probe.transformer
    sizes = compressible(model)
    blocks = [b for b in probe.blocks if sizes[b] > 0]
    cmmd = {b: probe.measure([b], desc=f"probe block {b}").cmmd for b in blocks}
    score = {b: importance(cmmd[b], sizes[b], cfg.c_fixed) for b in blocks}
    ranked = sorted(blocks, key=lambda b: (score[b], blocks.index(b)))  # least important first
    k = min(cfg.linear.blocks or len(ranked), len(ranked))
    s, n = cfg.linear.base_ratio, cfg.linear.remove * total
    needed = n_params(model) - cfg.target * total
    last = needed < n
    n = min(n, needed)  # the last round removes only what is left to reach the target
    p = [sizes[b] for b in ranked]
    try:
        c, fitted = linear_ratios(p[:k], s, n), f"k={k}"
    except ScheduleError as err:
        if rounds_done == 0 and not last:
            raise ScheduleError(f"schedule.linear: {err} (blocks {', '.join(ranked[:k])})") from None
        k, c = _refit(p, s, n, k, err)
        fitted = f"k={cfg.linear.blocks or len(ranked)} -> {k} (eq 4.21)"
    ratios = {b: r for b, r in zip(ranked[:k], c) if r > 0}
    detail = {"cmmd": cmmd, "importance": score, "ranked": ranked, "P": dict(zip(ranked, p)), "S": s, "N": n, "k": k}
    return RoundPlan(list(ratios), ratios, "svd", None, fitted, detail)


def _refit(p: list[int], s: float, n: float, k: int, err: ScheduleError) -> tuple[int, list[float]]:
    """The k' nearest k (ties: fewer) whose blocks satisfy eq 4.21 for S and N, with their ratios.

    N below S·P_1 fits no k' ≥ 2: the least important block alone, by N / P_1 ≤ S.
    """
    for kk in sorted(range(2, len(p) + 1), key=lambda kk: (abs(kk - k), kk)):
        try:
            return kk, linear_ratios(p[:kk], s, n)
        except ScheduleError:
            continue
    if n <= s * p[0]:
        return 1, [n / p[0]]
    raise err


def apply_plan(model, rp: RoundPlan):
    """The compressed copy of `model` and its record (removal, or SVD with per-block ratios)."""
    if rp.method == "remove":
        return remove_blocks(model, rp.blocks)
    student, record = model, None
    for b in rp.blocks:
        student, record = svd_compress(student, [b], rp.ratios[b], inplace=student is not model)
    return student, record


# ---------------------------------------------------------------- state

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def work_dir_for(params, inputs: dict) -> Path:
    """`<schedule.checkpoint_dir>/<digest>`: one folder per settings and inputs, outside DVC's outputs."""
    from ditcompress.distill.train import NOT_IN_KEY

    cfg = params.schedule
    recipe = recipe_for(params.distill, params.model.preset)
    settings = {"schedule": cfg.model_dump(mode="json", exclude={"checkpoint_dir"}),
                "distill": {k: v for k, v in recipe.model_dump(mode="json").items()
                            if k not in NOT_IN_KEY | {"student", "steps"}},
                "score": params.score.model_dump(mode="json", include={"prompts", "seed", "batch_size"}),
                "evaluate": params.evaluate.model_dump(mode="json", exclude={"students", "device", "batch_size"}),
                "generate": fingerprint(for_preset(params.generate, teacher_preset(params.model))),
                **inputs}
    return Path(cfg.checkpoint_dir) / _digest(settings)


def _load_state(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"teacher": None, "rounds": [], "pending": None}


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write((json.dumps(state, indent=1) + "\n").encode())


def _save_atomic(student, record, directory: Path) -> None:
    """The student in `directory`, written next to it and renamed: a kill leaves it whole or absent."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_student(student, tmp, record)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


# ---------------------------------------------------------------- the loop

def _probe(params, cfg, student: str | None, memo_dir: Path):
    """The probe of `student` (None: the teacher) with the schedule's modification, memoised in `memo_dir`."""
    from ditcompress.score.run import build_probe

    modification = "svd" if cfg.kind == "linear_progressive" else cfg.method
    score = params.score.model_copy(update={"student": student, "criteria": ["metric"],
                                            "modification": modification, "c_fixed": cfg.c_fixed})
    return build_probe(params.model_copy(update={"score": score}), memo_dir)


def _evaluate(params, cfg, name: str, student: str | None, eval_dir: Path, tracker) -> dict:
    """The evaluate stage's metrics of one model (empty when `schedule.evaluate` is off)."""
    if not cfg.evaluate:
        return {}
    from ditcompress.metrics.benchmark import run_evaluate

    values = run_evaluate(params, eval_dir, tracker, models={name: student})[name]
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}


def _row(k: int, params_now: int, total: int, metrics: dict, **extra) -> dict:
    """One round's row of rounds.json: size, the evaluate figures (by their short names), the rest."""
    row = {"round": k, "params": params_now, "kept_fraction": params_now / total}
    for m in METRICS:  # GenEval and DPG report their overall score as `<name>/overall`
        hit = metrics.get(m, metrics.get(f"{m}/overall"))
        if hit is not None:
            row[m] = hit
    return {**row, **extra}


def run_schedule(params, out_dir: str | Path = "models/students/schedule", work_dir: str | Path = "data/schedule",
                 tracker=None, plots_dir: str | Path | None = None, *,
                 stop: tuple[int, int | None] | None = None) -> dict:
    """Run `schedule.kind` to `schedule.target`; save every round's student; return the summary metrics.

    `stop=(k, step)` ends the call inside round k after `step` distillation steps, or once round k
    is done when `step` is None (tests of the resume; the next call carries on).
    """
    from ditcompress.distill.stage import run_distill

    from ditcompress.tracking import StageRun

    started = time.perf_counter()
    tracker = tracker if tracker is not None else StageRun("schedule", None, None)  # logs nothing
    cfg = params.schedule
    preset = teacher_preset(params.model)
    total = teacher_parameters(preset)
    recipe = recipe_for(params.distill, params.model.preset)
    steps = cfg.round_steps(params.model.preset, recipe.steps)
    data = {"teacher": model_digest(preset.pretrained), "laion": model_digest(recipe.laion),
            "domain": model_digest(recipe.domain)}
    work = work_dir_for(params, data)
    state_file = work / STATE
    state = _load_state(state_file)
    rounds = state["rounds"]
    spent = state.get("seconds", 0.0)
    current = rounds[-1]["student"] if rounds else None
    probe = _probe(params, cfg, current, work / f"probe-{len(rounds)}")
    check_reachable(cfg, probe.transformer, total)  # before anything is rendered
    if rounds or state["pending"]:
        log.info("schedule: resuming %s in %s after %d finished round(s)", cfg.kind, work, len(rounds))
    eval_dir = Path(work_dir) / "eval"
    if state["teacher"] is None:  # a fresh start: the probe is the teacher's
        base = probe.measure([], desc="render teacher")
        metrics = _evaluate(params, cfg, "teacher", None, eval_dir, tracker)
        state["teacher"] = _row(0, total, total, metrics, blocks=[], ratios={}, cmmd_after=base.cmmd,
                                clip_after=base.clip_score)
        state["blocks"] = probe.blocks  # the teacher's, in execution order (the heatmap's rows)
        _save_state(state_file, state)

    stopped = "target"
    while n_params(probe.transformer) / total > cfg.target:
        k = len(rounds) + 1
        if k > (1 if cfg.kind == "one_shot" else cfg.max_rounds):
            stopped = "max_rounds"
            log.warning("schedule: stopped after %d rounds (schedule.max_rounds) at %.1f%% of the teacher, above "
                        "the target %.1f%%", len(rounds), 100 * n_params(probe.transformer) / total, 100 * cfg.target)
            break
        rdir = work / f"round-{k}"
        with tracker.child(f"round-{k}", {"schedule.kind": cfg.kind}) as rt:
            pending = state["pending"]
            if pending is None or pending["round"] != k:
                offset = total - n_params(probe.transformer)
                rp = plan_round(cfg, probe, total, offset, rounds_done=len(rounds))
                student, record = apply_plan(probe.transformer, rp)
                _save_atomic(student, record, rdir / "compressed")
                before = rp.cmmd
                if before is None:  # linear: the ratios differ from the probed c_fixed, render the student
                    with probe.renderer.using(student):
                        before, _ = probe.score_images(probe.render(list(probe.reference.prompts), probe.seeds,
                                                                    desc="render compressed"))
                pending = {"round": k, "plan": asdict(rp), "cmmd_before": before,
                           "params": n_params(student)}
                state["pending"] = pending
                _save_state(state_file, state)
                del student
            rp = RoundPlan(**pending["plan"])
            mult = 1
            if cfg.kind == "one_shot":
                mult = cfg.one_shot_rounds or (math.ceil(len(rp.blocks) / cfg.blocks_per_round)
                                               if cfg.blocks_per_round else 1)
            round_steps = {p: n * mult for p, n in steps.items()}
            halt = stop[1] if stop is not None and stop[0] == k else None
            if "distilled" not in pending:  # a kill after retraining does not retrain again
                summary = run_distill(params, rdir / "student", work_dir, rt, plots_dir=rdir / "plots",
                                      student=str(rdir / "compressed"), steps=round_steps, stop_after=halt)
                if halt is not None:
                    return {}
                pending["distilled"] = summary
                _save_state(state_file, state)
            summary = pending["distilled"]
            probe = _probe(params, cfg, str(rdir / "student"), work / f"probe-{k}")
            after = probe.measure([], desc="render retrained")
            metrics = _evaluate(params, cfg, f"round-{k}", str(rdir / "student"), eval_dir, rt)
            row = _row(k, pending["params"], total, metrics, blocks=rp.blocks, ratios=rp.ratios, method=rp.method,
                       stopped=rp.stopped, cmmd_before=pending["cmmd_before"], cmmd_after=after.cmmd,
                       clip_after=after.clip_score, steps=sum(round_steps.values()),
                       distill_seconds=summary["seconds"], student=str(rdir / "student"), detail=rp.detail)
            rt.log_metrics({key: v for key, v in row.items() if isinstance(v, (int, float))})
            rt.log_dict({key: v for key, v in row.items()}, "schedule/round.json")
        rounds.append(row)
        state["pending"] = None
        state["seconds"] = spent + time.perf_counter() - started  # work time over every attempt
        _save_state(state_file, state)
        curve = ("kept_fraction", *METRICS, "cmmd_before", "cmmd_after")
        tracker.log_metrics({key: row[key] for key in curve if key in row}, step=k)  # the stage run's curve
        log.info("schedule: round %d: %s %s -> %.1f%% of the teacher; CMMD %.4f before, %.4f after retraining%s",
                 k, rp.method, ", ".join(f"{b}@{r:.2f}" for b, r in rp.ratios.items()), 100 * row["kept_fraction"],
                 row["cmmd_before"], row["cmmd_after"],
                 f"; GenEval {row['geneval']:.3f}" if "geneval" in row else "")
        if cfg.kind == "progressive" and cfg.cmmd_threshold is not None and rp.stopped == "target":
            log.info("schedule: round %d reached the target before CMMD reached schedule.cmmd_threshold=%g; "
                     "the schedule stops at the target", k, cfg.cmmd_threshold)
        if stop is not None and stop == (k, None):
            return {}
    if not rounds:
        raise UserError(f"schedule.target={cfg.target}: the teacher already holds no more than that")
    return _finish(params, state, work, Path(out_dir), plots_dir, stopped, spent + time.perf_counter() - started,
                   tracker)


def _finish(params, state: dict, work: Path, out: Path, plots_dir, stopped: str, seconds: float, tracker) -> dict:
    """Copy the round students to `out`, write the rows and figures, remove the work folder."""
    from ditcompress.schedule.plots import write_schedule_plots

    cfg, rounds = params.schedule, state["rounds"]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for row in rounds:
        shutil.copytree(row["student"], out / f"round-{row['round']}")
        row["student"] = str(out / f"round-{row['round']}")
    rows = [state["teacher"], *rounds]
    if plots_dir is not None:
        figures = write_schedule_plots([{k: v for k, v in r.items() if k != "detail"} for r in rows],
                                       state["blocks"], plots_dir, name=cfg.kind)
        for path in figures:
            tracker.log_artifact(path, "schedule")
    (out / "rounds.json").write_text(json.dumps(rows, indent=1) + "\n")
    tracker.log_table([{k: v for k, v in r.items() if k not in ("detail", "ratios")} for r in rows],
                          "schedule/rounds_table.json")  # rounds.json is the plots file
    last = rounds[-1]
    shutil.rmtree(work, ignore_errors=True)
    summary = {"kind": cfg.kind, "rounds": len(rounds), "stopped": stopped, "seconds": seconds,
               "steps": sum(r["steps"] for r in rounds), "params": last["params"],
               "kept_fraction": last["kept_fraction"], "cmmd_before": last["cmmd_before"],
               "cmmd_after": last["cmmd_after"]}
    summary.update({m: last[m] for m in METRICS if m in last})
    summary.update({f"teacher_{m}": state["teacher"][m] for m in METRICS if m in state["teacher"]})
    log.info("schedule: %s done in %d rounds, %.0f s: %.1f%% of the teacher kept%s", cfg.kind, len(rounds), seconds,
             100 * last["kept_fraction"], f", GenEval {last['geneval']:.3f}" if "geneval" in last else "")
    return summary

