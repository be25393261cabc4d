"""Block selection algorithms (thesis 4.2.2): one-shot ranking, greedy re-scoring, Optuna TPE seeded
with the greedy prior, the exhaustive oracle, and a manual list. TinyFusion lives in `tinyfusion.py`.

Every algorithm works on `measure(blocks) -> Measurement` (the model with `blocks` modified,
scored on the reference prompts), so they are tested on synthetic objectives with known optima and
share one memoised measurement of each subset in the stage.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from math import comb

from ditcompress.errors import UserError
from ditcompress.score.criteria import rank_sum
from ditcompress.score.probe import Measurement
from ditcompress.utils.logging import get_logger, progress

log = get_logger(__name__)

Measure = Callable[[Sequence[str]], Measurement]


@dataclass
class Selection:
    """The chosen blocks, what they score together, and how the algorithm got there."""

    algorithm: str
    blocks: list[str]
    cmmd: float
    clip_score: float
    removed_params: int
    stopped: str = ""  # why greedy stopped: "k", "target", "cmmd_threshold", "no candidates left"
    iterations: list[dict] = field(default_factory=list)  # greedy: the candidates of every step
    greedy: dict | None = None  # optuna: the prior it started from
    trials: list[dict] = field(default_factory=list)  # optuna / exhaustive: every subset evaluated

    def to_json(self) -> dict:
        """Plain dict (the prior and the empty lists kept, so readers need no special cases)."""
        return asdict(self)


def _of(algorithm: str, blocks: list[str], m: Measurement, **extra) -> Selection:
    return Selection(algorithm, list(blocks), m.cmmd, m.clip_score, m.removed_params, **extra)


def check_k(k: int, n_blocks: int, modification: str) -> None:
    """k blocks must leave a block to run (removal) and exist (SVD); the error names the key."""
    limit = n_blocks - 1 if modification == "remove" else n_blocks
    if k > limit:
        what = "removing every block" if modification == "remove" else "more blocks than the model has"
        raise UserError(f"score.selection.k: {k} blocks of {n_blocks} means {what} (at most {limit})")


def check_subsets(n_blocks: int, k: int, max_subsets: int) -> None:
    """The exhaustive oracle refuses more than `max_subsets` subsets (C(28, 14) would be 40 million)."""
    count = comb(n_blocks, k)
    if count > max_subsets:
        raise UserError(f"score.selection.max_subsets: exhaustive over C({n_blocks}, {k}) = {count} subsets "
                        f"exceeds max_subsets={max_subsets}")


def check_blocks(blocks: Sequence[str], known: Sequence[str], key: str = "score.selection.blocks") -> None:
    """One-line error naming the first unknown block id."""
    for b in blocks:
        if b not in known:
            raise UserError(f"{key}: unknown block id {b!r} (the model has {', '.join(known)})")
    if len(set(blocks)) != len(blocks):
        raise UserError(f"{key}: a block is listed twice ({list(blocks)})")


def order(importance: dict[str, float]) -> list[str]:
    """Block ids least important first (ties keep execution order)."""
    return sorted(importance, key=lambda b: importance[b])


def ranking(importance: dict[str, float], k: int) -> list[str]:
    """The k least important blocks by one criterion (one-shot selection, 4.6.1)."""
    return order(importance)[:k]


def candidate_importance(criterion: str, found: dict[str, Measurement], base_removed: int) -> dict[str, float]:
    """Importance of each candidate from its measurement (higher = more important).

    `cmmd`: CMMD; `clip_score`: minus the CLIP score; `rank_sum`: eq 4.4 over the candidates;
    `cmmd_per_param`: CMMD per parameter the candidate adds to the removed ones (eq 4.15).
    """
    cmmd = {b: m.cmmd for b, m in found.items()}
    clip = {b: m.clip_score for b, m in found.items()}
    if criterion == "cmmd":
        return cmmd
    if criterion == "clip_score":
        return {b: -v for b, v in clip.items()}
    if criterion == "rank_sum":
        return rank_sum(cmmd, clip)
    if criterion == "cmmd_per_param":
        return {b: m.cmmd / max(m.removed_params - base_removed, 1) for b, m in found.items()}
    raise UserError(f"score.selection.criterion: greedy cannot re-rank by {criterion!r}")


def greedy(blocks: Sequence[str], measure: Measure, *, criterion: str = "rank_sum", k: int | None = None,
           total_params: int | None = None, target: float | None = None, cmmd_threshold: float | None = None,
           modification: str = "remove", offset: int = 0, desc: str = "greedy") -> Selection:
    """Modify the least important block, re-score the rest on the modified model, repeat (4.2.2).

    Stops after `k` blocks, once the kept fraction of `total_params` is at most `target`, or once
    CMMD reaches `cmmd_threshold` (the block that reaches it is included: the progressive
    schedule retrains from there, 4.6.2), whichever comes first. `offset`: parameters of the
    teacher already gone before this round (a student being scored), counted in the kept fraction.
    """
    if k is None and target is None and cmmd_threshold is None:
        raise UserError("score.selection: greedy needs a stop: k, target or cmmd_threshold")
    if target is not None and total_params is None:
        raise ValueError("greedy: a target fraction needs total_params")
    limit = len(blocks) - 1 if modification == "remove" else len(blocks)
    chosen: list[str] = []
    current = measure([])
    iterations, stopped = [], "no candidates left"
    bar = progress(total=k or limit, desc=desc, unit="block")
    while len(chosen) < limit:
        found = {b: measure(chosen + [b]) for b in blocks if b not in chosen}
        scores = candidate_importance(criterion, found, current.removed_params)
        best = min(scores, key=lambda b: scores[b])  # ties: the earlier block
        chosen.append(best)
        current = found[best]
        iterations.append({"block": best, "cmmd": current.cmmd, "clip_score": current.clip_score,
                           "removed_params": current.removed_params,
                           "candidates": {b: {"cmmd": m.cmmd, "clip_score": m.clip_score, "score": scores[b]}
                                          for b, m in found.items()}})
        bar.update(1)
        bar.set_postfix(block=best, cmmd=f"{current.cmmd:.3f}")
        if k is not None and len(chosen) >= k:
            stopped = "k"
            break
        if target is not None and 1 - (offset + current.removed_params) / total_params <= target:
            stopped = "target"
            break
        if cmmd_threshold is not None and current.cmmd >= cmmd_threshold:
            stopped = "cmmd_threshold"
            break
    bar.close()
    if stopped == "no candidates left":
        log.warning("greedy: no block left to modify before reaching the stop (%d modified)", len(chosen))
    return _of("greedy", chosen, current, stopped=stopped, iterations=iterations)


def exhaustive(blocks: Sequence[str], measure: Measure, k: int, *, max_subsets: int,
               desc: str = "exhaustive") -> Selection:
    """Every k-subset measured; the one with the lowest CMMD (the oracle greedy and Optuna are judged by)."""
    check_subsets(len(blocks), k, max_subsets)
    trials = []
    for number, subset in enumerate(progress(list(combinations(blocks, k)), desc=desc, unit="subset")):
        m = measure(list(subset))
        trials.append({"number": number, "blocks": list(subset), "cmmd": m.cmmd, "clip_score": m.clip_score})
    best = min(trials, key=lambda t: t["cmmd"])
    return _of("exhaustive", best["blocks"], measure(best["blocks"]), trials=trials)


def optuna_search(blocks: Sequence[str], measure: Measure, k: int, *, n_trials: int, seed: int,
                  prior: Sequence[str] | None = None, storage: str | None = None, study_name: str = "score",
                  on_trial: Callable[[dict], None] | None = None, desc: str = "optuna") -> Selection:
    """TPE over which k blocks to modify, minimising CMMD (4.2.2); the prior is the first trial.

    Encoding: one weight in [0, 1] per block, the subset being the k highest-weighted blocks (ties
    in execution order), so every proposal is a valid subset and the prior is weight 1 on its
    blocks. TPE converges onto few subsets (on 8 blocks most of its proposals repeat one), so a
    proposal of a subset this study has measured is pruned without rendering and the next trial
    is a random unmeasured subset (seeded): `n_trials` distinct subsets are measured, or all
    C(n, k) when there are fewer. With
    `storage` (an RDB URL) a killed search resumes: measured trials are kept and only the missing
    ones run (the sampler's later draws then differ from an unbroken run).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = len(blocks)
    if not 1 <= k <= n:
        raise UserError(f"score.selection.k: optuna needs 1 <= k <= {n} (got {k})")
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    complete = optuna.trial.TrialState.COMPLETE

    def subset_of(params: dict) -> list[str]:
        return sorted(blocks, key=lambda b: (-params[f"w{b}"], blocks.index(b)))[:k]

    seen = {frozenset(subset_of(t.params)) for t in study.trials if t.state == complete}
    goal = min(n_trials, comb(n, k))

    rng = random.Random(f"{seed}:{len(study.trials)}")

    def objective(trial) -> float:
        picked = subset_of({f"w{b}": trial.suggest_float(f"w{b}", 0.0, 1.0) for b in blocks})
        if frozenset(picked) in seen:
            fresh = _unseen(blocks, k, seen, rng)
            if fresh is not None:
                study.enqueue_trial({f"w{b}": float(b in fresh) for b in blocks})
            raise optuna.TrialPruned()  # measured already: no render, and it does not count
        seen.add(frozenset(picked))
        m = measure(picked)
        trial.set_user_attr("clip_score", m.clip_score)
        return m.cmmd

    if prior is not None and not study.trials:
        study.enqueue_trial({f"w{b}": float(b in prior) for b in blocks})
    bar = progress(total=goal, initial=min(len(seen), goal), desc=desc, unit="trial")

    def after(study, trial):
        if trial.state == complete:
            bar.update(1)
            bar.set_postfix(best=f"{study.best_value:.4f}")
            if on_trial is not None:
                on_trial({"number": trial.number, "blocks": subset_of(trial.params), "cmmd": trial.value})
        if len(seen) >= goal:
            study.stop()

    if len(seen) < goal:
        study.optimize(objective, callbacks=[after])
    bar.close()
    trials = [{"number": t.number, "blocks": subset_of(t.params), "cmmd": t.value,
               "clip_score": t.user_attrs.get("clip_score")}
              for t in study.trials if t.state == complete]
    best = min(trials, key=lambda t: (t["cmmd"], t["number"]))
    return _of("optuna", best["blocks"], measure(best["blocks"]), trials=trials)


def _unseen(blocks: Sequence[str], k: int, seen: set, rng: random.Random) -> list[str] | None:
    """A random k-subset not in `seen` (None when every subset is)."""
    for _ in range(1000):
        pick = rng.sample(list(blocks), k)
        if frozenset(pick) not in seen:
            return pick
    rest = [list(c) for c in combinations(blocks, k) if frozenset(c) not in seen] if comb(len(blocks), k) <= 10**6 else []
    return rng.choice(rest) if rest else None
