"""`ditcompress` command line: small research utilities (stages live in `stages/`).

    ditcompress params pixart-sigma          # tab. 4.1 from the shipped config, in seconds, no GPU
    ditcompress params flux-dev --json       # tab. 4.2, exact counts as JSON
    ditcompress params path/to/config.json   # any PixArt/Flux transformer config or saved student
    ditcompress study kd-loss --jobs 1       # queue a chapter-5 study's experiments (configs/studies.yaml)
    ditcompress report kd-loss               # docs/results/kd-loss.md and .png from the finished ones

Subcommands register themselves in `COMMANDS` (name -> (help, add_arguments, run)).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ditcompress.errors import UserError


def _params_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `ditcompress params`."""
    p.add_argument("model", help="preset (pixart-sigma, flux-dev), a transformer config.json, or a model directory")
    p.add_argument("--json", action="store_true", help="print exact counts as JSON instead of a table")


def _params_run(args: argparse.Namespace) -> int:
    """Build the transformer on the meta device and print its per-block / per-part parameter table."""
    from ditcompress.compress.student import MANIFEST, build_student
    from ditcompress.models.accounting import format_table, parameter_table
    from ditcompress.models.registry import adapter_for, build_transformer, load_config

    path = Path(args.model)
    if path.is_dir() and (path / MANIFEST).is_file():  # a saved student: its own structure
        model = build_student(path, device="meta")
    else:
        model = build_transformer(load_config(args.model), device="meta")
    table = parameter_table(adapter_for(model), model)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0


def _study_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `ditcompress study`."""
    p.add_argument("name", help="a study of configs/studies.yaml (criteria, selection, kd-loss, ...)")
    p.add_argument("--jobs", type=int, default=1, help="experiments run side by side by `dvc queue start`; each gets cores/jobs threads")
    p.add_argument("--no-start", action="store_true", help="only queue; start later with `dvc queue start`")
    p.add_argument("--file", default="configs/studies.yaml", help="the studies file")


def _study_run(args: argparse.Namespace) -> int:
    """Queue every experiment of the study (and start the queue)."""
    from ditcompress.study import baseline_current, check_cache, dvc_exp_show, dvc_status, get_study, queue_study

    study = get_study(args.name, args.file)
    status = dvc_status()
    check_cache(study, status)
    names, twins = queue_study(study, None if args.no_start else args.jobs, show=dvc_exp_show(),
                               baseline=baseline_current(status))
    for name, twin in twins.items():
        print(f"not queued {name}: " + ("queued or run already" if twin == name else
                                          "the baseline's `dvc repro` has its params.yaml" if twin == "workspace"
                                          else f"{twin} has the same params.yaml (the report uses it)"))
    print(f"queued {len(names)} experiments: {', '.join(names)}")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `ditcompress report`."""
    p.add_argument("name", help="a study of configs/studies.yaml")
    p.add_argument("--out", default="docs/results", help="where <study>.md and <study>.png go")
    p.add_argument("--file", default="configs/studies.yaml", help="the studies file")


def _report_run(args: argparse.Namespace) -> int:
    """Table and figure of a study's finished experiments."""
    from ditcompress.study import baseline_current, dvc_exp_show, dvc_status, get_study, report_study

    md, png = report_study(get_study(args.name, args.file), dvc_exp_show(), args.out,
                           baseline=baseline_current(dvc_status()))
    print(f"wrote {md} and {png}")
    return 0


COMMANDS = {
    "params": ("per-block / per-part parameter counts (thesis tab. 4.1/4.2)", _params_args, _params_run),
    "study": ("queue the DVC experiments of a chapter-5 study (configs/studies.yaml)", _study_args, _study_run),
    "report": ("table and figure of a study's finished experiments (docs/results/)", _report_args, _report_run),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ditcompress` console script."""
    parser = argparse.ArgumentParser(prog="ditcompress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        add_args(p)
        p.set_defaults(run=run)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyError, FileNotFoundError, ValueError) as err:
        print(f"ditcompress {args.command}: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
