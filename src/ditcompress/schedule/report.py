"""A finished schedule read back from MLflow: the rows of each round, for reports across experiments."""

from __future__ import annotations

import re

from ditcompress.errors import UserError

METRICS = ("geneval", "cmmd", "clip_score")  # a round run's metric names (schedule.run.METRICS)


def rounds_of(client, experiment_id: str, name: str) -> tuple[str, dict, list[dict]]:
    """(kind, teacher row, round rows) of DVC experiment `name`'s latest finished schedule stage run.

    A resumed schedule's earlier rounds are children of the killed attempts before it; each row
    carries `steps`, the training steps of all rounds up to it.
    """
    stages = client.search_runs([experiment_id], f"tags.`dvc.exp_name` = '{name}' and tags.stage = 'schedule' "
                                                 "and tags.`ditcompress.role` = 'stage'", order_by=["start_time DESC"])
    finished = [r for r in stages if r.info.status == "FINISHED"]
    if not finished:
        raise UserError(f"{name}: no finished schedule stage run in the MLflow store")
    latest = finished[0]
    kind = latest.data.params["schedule.kind"]
    by_round: dict[int, dict] = {}
    older = stages[stages.index(latest):]
    for stage in reversed(older):  # the newest attempt wins a round it shares with a killed one
        if stage.data.params != latest.data.params:
            continue
        for run in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{stage.info.run_id}'"):
            m = run.data.metrics
            if "round" in m:
                by_round[int(m["round"])] = {"round": int(m["round"]), "kept_fraction": m["kept_fraction"],
                                             "params": m["params"], "round_steps": m.get("steps", 0.0),
                                             **{k: m[k] for k in METRICS if k in m}}
    rows, total = [], 0.0
    for k in sorted(by_round):
        total += by_round[k]["round_steps"]
        rows.append({**by_round[k], "steps": total})
    m = latest.data.metrics
    teacher = {"round": 0, "kept_fraction": 1.0, "steps": 0.0,
               **{k: m[f"teacher_{k}"] for k in METRICS if f"teacher_{k}" in m}}
    return kind, teacher, rows


def schedule_curves(client, experiment_id: str, names: dict[str, str]) -> tuple[dict[str, list[dict]], list[tuple]]:
    """One line of rows per label of `names` ({label: DVC experiment}), one-shot runs joined into one per seed
    (labels ending in `-s<seed>`).

    Returns (lines for `plots.quality_curves`, (label, kind, row) per round for `curves_table`).
    """
    lines: dict[str, list[dict]] = {}
    table = []
    for label, name in names.items():
        kind, teacher, rows = rounds_of(client, experiment_id, name)
        seed = re.search(r"-s\d+$", label)
        line = "one_shot" + (seed.group() if seed else "") if kind == "one_shot" else label
        lines.setdefault(line, [teacher]).extend(rows)
        table += [(label, kind, r) for r in rows]
    for rows in lines.values():
        rows.sort(key=lambda r: -r["kept_fraction"])
    return lines, table


def curves_table(table: list[tuple]) -> list[str]:
    """Markdown rows: experiment, kind, round, kept fraction, GenEval, CMMD, CLIP score, steps so far."""
    nan = float("nan")
    out = ["| experiment | kind | round | kept | GenEval | CMMD | CLIP score | steps so far |", "|---" * 8 + "|"]
    for label, kind, r in sorted(table, key=lambda t: (t[1], -t[2]["kept_fraction"], t[0])):
        out.append(f"| {label} | {kind} | {r['round']} | {r['kept_fraction']:.3f} | {r.get('geneval', nan):.3f} "
                   f"| {r.get('cmmd', nan):.3f} | {r.get('clip_score', nan):.1f} | {r['steps']:.0f} |")
    return out
