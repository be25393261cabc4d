"""The chapter-5 studies: queue a grid of DVC experiments, then report them as a table and a figure.

    ditcompress study kd-loss --jobs 1      # dvc exp run --queue per point and seed, then dvc queue start
    ditcompress report kd-loss              # docs/results/kd-loss.md and .png from dvc exp show --json

The grids live in `configs/studies.yaml` (see its header). Every grid key must be a key of
params.yaml's schema (`ditcompress.params.Params`); a study name, a key or an empty report is a
one-line `StudyError`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ditcompress.errors import UserError

STUDIES = Path("configs/studies.yaml")


class StudyError(UserError):
    """A bad study name, grid key or report, in one line."""


@dataclass
class Study:
    """One study of `configs/studies.yaml`."""

    name: str
    thesis: str
    about: str
    grid: dict[str, list] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    seed_key: str = "seed"
    stages: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    own_seeds: dict[str, list[int]] = field(default_factory=dict, init=False)  # a listed experiment's `seeds`

    def __post_init__(self):
        self.experiments = {label: dict(over) for label, over in self.experiments.items()}
        self.own_seeds = {label: over.pop("seeds") for label, over in self.experiments.items() if "seeds" in over}

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """(experiment name, overrides) for every grid point and listed experiment, once per seed."""
        return [(name, over) for name, _, over in self._expanded()]

    def label(self, name: str) -> str:
        """The grid point or experiment label of one of this study's experiment names."""
        return next((label for n, label, _ in self._expanded() if n == name), name)

    def _expanded(self) -> list[tuple[str, str, dict[str, Any]]]:
        keys = list(self.grid)
        labelled = [("-".join(_label(v) for v in values), dict(zip(keys, values)))
                    for values in (itertools.product(*(self.grid[k] for k in keys)) if keys else [])]
        labelled += list(self.experiments.items())
        labelled = labelled or [("", {})]  # a study of `set` alone: one experiment
        seeds = {label: self.own_seeds.get(label, self.seeds) for label, _ in labelled}
        # seed-major: the queue finishes a whole first pass before any second seed
        return [("-".join(p for p in (self.name, label, f"s{seed}") if p), label or "default",
                 {**self.set, **over, self.seed_key: seed})
                for seed in sorted(set().union(*seeds.values())) for label, over in labelled if seed in seeds[label]]


def _label(value) -> str:
    return str(value).replace("_", "-").replace(".", "p")


def load_studies(path: str | Path = STUDIES) -> dict[str, Study]:
    """Every study of the file, each checked against the params schema."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    studies = {}
    for name, body in raw.items():
        try:
            study = Study(name=name, **body)
        except TypeError as err:
            raise StudyError(f"{path}: study {name!r}: {err}") from None
        for key in [*study.grid, *study.set, study.seed_key, *(k for e in study.experiments.values() for k in e)]:
            check_key(key, f"{path}: study {name!r}")
        check_stages(study.stages, Path(path).resolve().parent.parent / "dvc.yaml", f"{path}: study {name!r}")
        studies[name] = study
    return studies


def check_stages(stages: list[str], dvc_yaml: Path, where: str) -> None:
    """Every target is a stage of dvc.yaml (skipped where there is no dvc.yaml next to configs/)."""
    if not stages or not dvc_yaml.is_file():
        return
    known = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    for stage in stages:
        if stage not in known:
            raise StudyError(f"{where}: stage {stage!r} is not in {dvc_yaml.name} (stages: {', '.join(known)})")


def get_study(name: str, path: str | Path = STUDIES) -> Study:
    """The named study, or a one-line error listing the known ones."""
    studies = load_studies(path)
    if name not in studies:
        raise StudyError(f"unknown study {name!r} (known: {', '.join(studies)})")
    return studies[name]


def check_key(key: str, where: str) -> None:
    """`key` names a params.yaml field (a dict field may take sub-keys, e.g. distill.steps.global)."""
    from pydantic import BaseModel

    from ditcompress.params import Params

    model: Any = Params
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            if model is dict or getattr(model, "__origin__", None) is dict or "dict" in str(model):
                return  # a dict-valued field: its sub-keys are the user's
            raise StudyError(f"{where}: {key!r}: {'.'.join(parts[:i])} has no sub-keys")
        if part not in model.model_fields:
            raise StudyError(f"{where}: {key!r} is not a params.yaml key ({part!r} is not a field of "
                             f"{'.'.join(parts[:i]) or 'params.yaml'})")
        model = model.model_fields[part].annotation


def _override(key: str, value) -> str:
    """A `-S ++key=value` argument; lists and null in YAML flow syntax.

    `++` (Hydra's force-add) sets keys that params.yaml leaves to the preset, e.g. distill.steps.global,
    which plain `key=value` refuses; check_key has already vetted the key against the schema."""
    return f"++{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def not_in_cache(status: dict) -> list[str]:
    """The outputs that `dvc status --json` reports as not in the DVC cache."""
    return sorted({path for changes in status.values() if isinstance(changes, list) for change in changes
                   if isinstance(change, dict) for path, what in (change.get("changed outs") or {}).items()
                   if what == "not in cache"})


def check_cache(study: Study, status: dict) -> None:
    """A one-line error unless the baseline's outputs are cached: a queued experiment restores what its
    targets do not rerun from the cache, and DVC resolves every plot of dvc.yaml when it commits one."""
    if missing := not_in_cache(status):
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise StudyError(f"study {study.name}: {shown} not in the DVC cache; run `dvc repro` (make repro) first, "
                         "the experiments start from its outputs")


def dvc_status(cwd: str | Path = ".") -> dict:
    """`dvc status --json` of the repository."""
    return _dvc_json(["status", "--json"], cwd, "{") or {}


def _dvc_json(args: list[str], cwd: str | Path, opener: str):
    """The JSON document a `dvc` command prints (after any log lines), or None if it prints none."""
    out = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index(opener):]) if opener in out else None


def queue_study(study: Study, jobs: int | None = 1, runner=subprocess.run,
                show: list[dict] | None = None, baseline: bool = False) -> tuple[list[str], dict[str, str]]:
    """`dvc exp run --queue -n <name> -S ... [stages]` for every point; then `dvc queue start -j jobs` unless None.
    Returns the queued names and {point: twin} for the points skipped because an experiment of `show` (`dvc exp
    show --json`: finished, running or queued) already has their params.yaml: the point's own, from an earlier
    call cut short, another study's, or (`baseline`) the workspace's.

    A study's `stages` are the targets: only they and what they depend on run, so a distillation study does not
    also rerun the schedule stage that reads the same `distill` params."""
    names = []
    twins = twin_experiments(study, show or [], set(), states=(None, "success", "running", "queued"),
                             baseline=baseline)
    for name, over in study.points():
        if name in twins:
            continue
        cmd = ["dvc", "exp", "run", "--queue", "-n", name]
        for key, value in over.items():
            cmd += ["-S", _override(key, value)]
        runner(cmd + study.stages, check=True)
        names.append(name)
    if jobs is not None:
        runner(["dvc", "queue", "start", "-j", str(jobs)], check=True, env=worker_env(jobs))
    return names, twins


def worker_env(jobs: int, cores: int | None = None, environ=os.environ) -> dict[str, str]:
    """The queue workers' environment: the cores split between `jobs` experiments (torch would give each all of
    them, and side-by-side runs would then fight over every core). A thread count already set is kept."""
    env = dict(environ)
    threads = str(max(1, (cores or os.cpu_count() or 1) // max(1, jobs)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    return env


# ---------------------------------------------------------------- report

def finished_experiments(show: list[dict], prefix: str) -> dict[str, dict]:
    """{experiment name: {"params": ..., "metrics": {file: data}}} of `dvc exp show --json`, by name prefix."""
    found = {}
    for name, data in _experiment_revs(show, (None, "success")):  # not queued, failed or running (shown with
        if name.startswith(prefix) and data.get("metrics"):         # the workspace's metrics)
            found.setdefault(name, _experiment(data))
    return found


def _experiment(data: dict) -> dict:
    metrics = {Path(f).name: (m or {}).get("data", {}) for f, m in (data.get("metrics") or {}).items()}
    return {"params": _params(data), "metrics": metrics, "timestamp": data.get("timestamp")}


def _params(data: dict) -> dict:
    """params.yaml's data of one `dvc exp show --json` rev ({} where it has none)."""
    return (((data.get("params") or {}).get("params.yaml") or {}).get("data")) or {}


def _workspace(show: list[dict]) -> dict:
    """The workspace's data in `dvc exp show --json`: the baseline's params and metrics."""
    return next((b.get("data") or {} for b in show if b.get("rev") == "workspace"), {})


def _experiment_revs(show: list[dict], states: tuple):
    """(name, data) of every named, error-free experiment of `dvc exp show --json` whose executor is in `states`."""
    for baseline in show:
        for exp in baseline.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") in states:
                for rev in exp.get("revs") or []:
                    if rev.get("name") and not rev.get("error"):
                        yield rev["name"], rev.get("data") or {}


def twin_experiments(study: Study, show: list[dict], skip: set[str],
                     states: tuple = (None, "success"), baseline: bool = False) -> dict[str, str]:
    """{point: experiment} for the study's points not in `skip` whose params.yaml equals that of an experiment of
    `show` in one of `states` (kd-loss's default loss is protocol's default protocol and strategy's removal). With
    `baseline` (the workspace's outputs are those of its params.yaml, see `baseline_current`), a point equal to
    the workspace itself is `"workspace"`, the baseline's `dvc repro`, unless the point has run under its name.
    Equal params are the test: the twin's code may be another commit's."""
    base = _params(_workspace(show))
    if not base:
        return {}
    others = {}
    for name, data in _experiment_revs(show, states):
        if params := _params(data):
            others.setdefault(name, params)
    out = {}
    for name, over in study.points():
        if name in skip:
            continue
        want = _with(base, over)
        # its own name, then the baseline (which ran every stage), then another study's experiment
        twin = (name if others.get(name) == want else "workspace" if baseline and want == base
                else next((n for n, p in sorted(others.items()) if p == want), None))
        if twin is not None:
            out[name] = twin
    return out


def baseline_current(status: dict) -> bool:
    """Whether `dvc status --json` shows no stage whose params changed: the workspace's metrics are then those
    of its params.yaml (code edits do not count; the experiments compare params too)."""
    return not any("params.yaml" in (change.get("changed deps") or {}) for changes in status.values()
                   if isinstance(changes, list) for change in changes if isinstance(change, dict))


def _with(params: dict, overrides: dict[str, Any]) -> dict:
    """params.yaml's data with dotted-key overrides set (what `-S ++key=value` does)."""
    out = json.loads(json.dumps(params))
    for key, value in overrides.items():
        node, *path, last = [out, *key.split(".")]
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def metric(metrics: dict[str, dict], path: str) -> float | None:
    """`file.json:a.b/c` of one experiment's metrics (keys may contain '/'), or None."""
    file, _, key = path.partition(":")
    node: Any = metrics.get(file, {})
    head, _, rest = key.partition(".")
    while True:
        if not isinstance(node, dict):
            return None
        if key in node:
            node = node[key]
            break
        if head not in node:
            return None
        node, key = node[head], rest
        head, _, rest = key.partition(".")
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def report_study(study: Study, show: list[dict], out_dir: str | Path = "docs/results",
                 baseline: bool = False) -> tuple[Path, Path]:
    """`<out_dir>/<study>.md` (table: varied keys, metrics, mean ± spread over seeds) and `<study>.png`, from the
    finished experiments with each point's params.yaml (`baseline`: the workspace may be one, see
    `twin_experiments`)."""
    # by params, not name: an experiment left from an earlier version of the study's file is not reported
    measured = twin_experiments(study, show, set(), baseline=baseline)
    everyone = finished_experiments(show, "")
    everyone["workspace"] = _experiment(_workspace(show))
    measured = {point: exp for point, exp in measured.items() if everyone.get(exp, {}).get("metrics")}
    exps = {point: everyone[exp] for point, exp in measured.items()}
    if not exps:
        raise StudyError(f"report {study.name}: no finished experiment named {study.name}-* in dvc exp show "
                         f"(run `ditcompress study {study.name}` first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if study.report.get("curves"):
        return _report_curves(study, measured, out)
    columns = study.report.get("metrics", [])
    groups: dict[str, list[dict]] = {}
    for name, exp in sorted(exps.items()):
        groups.setdefault(study.label(name), []).append({c: metric(exp["metrics"], c) for c in columns})
    lines = [f"# {study.name}: {study.about} (thesis {study.thesis})", "", _made_by(study), "",
             f"Experiments `{study.name}-*`, seeds {study.seeds} ({study.seed_key}); mean ± half the range "
             "over the seeds that finished.", "",
             *_stand_ins(measured),
             "| experiment | seeds | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    summary = {}
    for label, runs in groups.items():
        cells = []
        for c in columns:
            vals = [r[c] for r in runs if r[c] is not None]
            mean = sum(vals) / len(vals) if vals else math.nan
            summary.setdefault(c, {})[label] = (mean, (max(vals) - min(vals)) / 2 if len(vals) > 1 else 0.0)
            cells.append("–" if not vals else f"{mean:.4g}" + (f" ± {summary[c][label][1]:.2g}" if len(vals) > 1 else ""))
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
    md = out / f"{study.name}.md"
    md.write_text("\n".join(lines) + "\n")
    png = out / f"{study.name}.png"
    bars = study.report.get("bars") or (columns[0] if columns else None)
    bars = bars if isinstance(bars, list) else [bars]
    _bars({b: summary.get(b, {}) for b in bars}, f"{study.name} (thesis {study.thesis})").savefig(png, dpi=120)
    return md, png


def _stand_ins(measured: dict[str, str]) -> list[str]:
    """The report's line naming the points measured under another name (and a blank line), if any."""
    pairs = [f"{p} = {e}" for p, e in sorted(measured.items()) if p != e]
    note = "; `workspace` is the baseline's `dvc repro`" if "workspace" in measured.values() else ""
    return [f"Measured under another name with the same params.yaml (not run twice{note}): {', '.join(pairs)}.",
            ""] if pairs else []


def _made_by(study: Study) -> str:
    return (f"Made by `ditcompress study {study.name}` (configs/studies.yaml) and "
            f"`ditcompress report {study.name}`.")


def _bars(series: dict[str, dict[str, tuple[float, float]]], title: str):
    """Bars per experiment label, one colour per metric of `series` ({metric: {label: (mean, spread)}})."""
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(label for values in series.values() for label in values))
    width = 0.8 / max(1, len(series))
    fig = Figure(figsize=(max(4.0, (0.6 + 0.5 * len(series)) * len(labels) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    for j, (what, values) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i, k in enumerate(labels) if k in values]
        ys = [values[k][0] for k in labels if k in values]
        ax.bar(xs, ys, width, yerr=[values[k][1] for k in labels if k in values], capsize=3,
               label=what.split(":", 1)[-1])
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.3f}", (x, y), ha="center", va="bottom" if y >= 0 else "top", fontsize=7,
                        xytext=(0, 2 if y >= 0 else -2), textcoords="offset points")
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.axhline(0, color="black", linewidth=0.6)
    if len(series) > 1:
        ax.legend(fontsize=7)
    else:
        ax.set_ylabel(next(iter(series)).split(":", 1)[-1])
    ax.set_title(title)
    return fig


def _report_curves(study: Study, measured: dict[str, str], out: Path) -> tuple[Path, Path]:
    """Schedule studies: every round's quality against kept fraction (MLflow round runs of each point's
    experiment, `measured`), one line per kind and seed."""
    import mlflow

    from ditcompress.schedule.plots import quality_curves
    from ditcompress.schedule.report import curves_table, schedule_curves
    from ditcompress.tracking import tracking_uri

    client = mlflow.MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("ditcompress")
    names = {point.removeprefix(f"{study.name}-"): exp for point, exp in sorted(measured.items())}
    lines, table = schedule_curves(client, experiment.experiment_id, names)
    md, png = out / f"{study.name}.md", out / f"{study.name}.png"
    quality_curves(lines).savefig(png, dpi=120)
    md.write_text("\n".join([f"# {study.name}: {study.about} (thesis {study.thesis})", "", _made_by(study), "",
                              *_stand_ins(measured), *curves_table(table)]) + "\n")
    return md, png


def dvc_exp_show(cwd: str | Path = ".") -> list[dict]:
    """`dvc exp show --json` (every experiment of every baseline)."""
    return _dvc_json(["exp", "show", "--json", "-A"], cwd, "[") or []
