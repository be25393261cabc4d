"""Distil the compress stage's student under several recipes and print each one's GenEval (4 seeds).

    python bench/distill_recipes.py --run base '{}' --run lr3e-4 '{"lr": 3e-4}'

Each run: `run_distill` with the default params and the given `distill:` overrides (JSON), then
GenEval of the result at evaluate.geneval.images_per_prompt (4) through the evaluate stage's
code. Work goes to bench/out/distill/<name>; figures are printed as one table at the end.
`{"model": {"preset": "shapes-flux"}}` in a run's JSON switches the teacher.
"""

import argparse
import json
import time
from pathlib import Path

import yaml

from ditcompress.distill.stage import run_distill
from ditcompress.metrics.benchmark import run_evaluate
from ditcompress.params import parse_params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--metrics", nargs="+", default=["geneval"])
    args = ap.parse_args()
    rows = []
    for name, overrides in args.run:
        raw = yaml.safe_load(Path(args.params).read_text())
        over = json.loads(overrides)
        model = over.pop("model", None)
        if model:
            raw["model"].update(model)
        raw["distill"] = {**(raw.get("distill") or {}), **over}
        out = Path("bench/out/distill") / name
        started = time.time()
        summary = run_distill(parse_params(raw), out / "student", out / "work", None, plots_dir=out)
        seconds = time.time() - started
        raw["evaluate"] = {**raw["evaluate"], "metrics": args.metrics, "students": {name: str(out / "student")}}
        # one folder for all runs: the teacher's images render once, each student's under its name
        values = run_evaluate(parse_params(raw), Path("bench/out/distill/eval"))[name]
        rows.append({"run": name, **over, "kept": round(summary["kept_fraction"], 3), "seconds": round(seconds),
                     **{k: round(v, 4) for k, v in values.items() if not k.startswith("geneval_")}})
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
