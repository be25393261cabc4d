"""Quality against size of finished schedule runs, read back from MLflow: one line per schedule.

    python bench/schedule_report.py workspace oneshot-1 oneshot-2 oneshot-3 oneshot-4 linear-progressive \
        --out schedule_compare.png

Each name is a DVC experiment (`dvc.exp_name` tag; `workspace` for `dvc repro`); its schedule
round runs give kept fraction, GenEval, CMMD and CLIP score per round, the teacher the point at
1.0. One-shot runs (one round each) join one line. The figure is
`ditcompress.schedule.plots.quality_curves`; the markdown table goes to stdout. Studies named
in configs/studies.yaml report the same way through `ditcompress report <study>`.
"""

import argparse
from pathlib import Path

import mlflow

from ditcompress.schedule.plots import quality_curves
from ditcompress.schedule.report import curves_table, schedule_curves
from ditcompress.tracking import tracking_uri


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("names", nargs="+")
    ap.add_argument("--out", type=Path, default=Path("schedule_compare.png"))
    args = ap.parse_args()
    client = mlflow.MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("ditcompress")
    lines, table = schedule_curves(client, experiment.experiment_id, {n: n for n in args.names})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    quality_curves(lines).savefig(args.out, dpi=120)
    print("\n".join(curves_table(table)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
