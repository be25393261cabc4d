"""How far greedy and Optuna are from the best block subset: CMMD (and GenEval) of each selection
against the exhaustive oracle, for k removed (or SVD-compressed) blocks of the shapes teacher.

    python bench/selection_oracle.py --k 2 3 [--trials 100] [--modification remove] [--preset shapes-pixart]

Runs the score stage's code on the default params (`params.yaml`, with `--modification`, the
preset and `score.criteria` set to what the selections need): the exhaustive oracle measures
every k-subset first, then greedy (rank sum of CMMD and CLIP score, as the thesis; and by CMMD
alone, Optuna's objective) and Optuna (TPE, the greedy prior first, `--trials` trials) pick
theirs from the same memo. Prints, per k, each selection's blocks, CMMD, its rank among all
C(n, k) subsets by CMMD, and the GenEval of the teacher with those blocks modified (the damage
the selection actually does; 2 images per prompt). The memo and the study live in `--out`
(default `bench/out/selection_oracle`), so a rerun prints at once.
"""

from __future__ import annotations

import argparse
import json
import time
from math import comb
from pathlib import Path

from ditcompress.params import load_params
from ditcompress.score import selection as algos
from ditcompress.score.run import build_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--modification", default="remove", choices=["remove", "svd"])
    ap.add_argument("--preset", default=None, help="model.preset (default: params.yaml's)")
    ap.add_argument("--out", default="bench/out/selection_oracle")
    ap.add_argument("--seed", type=int, default=0, help="Optuna's sampler seed")
    args = ap.parse_args()

    params = load_params()
    # model_copy, not a dump and re-parse: the preset fills only the generate keys params.yaml leaves unset
    score = params.score.model_copy(update={"modification": args.modification, "criteria": ["metric", "damage"]})
    model = params.model.model_copy(update={"preset": args.preset}) if args.preset else params.model
    params = params.model_copy(update={"score": score, "model": model})
    out = Path(args.out) / f"{params.model.preset}-{args.modification}"
    probe = build_probe(params, out)
    blocks, started = probe.blocks, time.time()
    report = {}
    for k in args.k:
        measure = lambda subset: probe.measure(subset)  # noqa: E731
        oracle = algos.exhaustive(blocks, measure, k, max_subsets=comb(len(blocks), k))
        by_cmmd = sorted(t["cmmd"] for t in oracle.trials)
        picks = {
            "exhaustive": oracle,
            "greedy (rank sum)": algos.greedy(blocks, measure, criterion="rank_sum", k=k,
                                              modification=args.modification),
            "greedy (CMMD)": algos.greedy(blocks, measure, criterion="cmmd", k=k, modification=args.modification),
        }
        picks["optuna"] = algos.optuna_search(blocks, measure, k, n_trials=args.trials, seed=args.seed,
                                              prior=picks["greedy (rank sum)"].blocks,
                                              storage=f"sqlite:///{(out / 'optuna.db').resolve()}",
                                              study_name=f"{probe.context}:k{k}:seed{args.seed}")
        rows = {}
        for name, sel in picks.items():
            rows[name] = {"blocks": sel.blocks, "cmmd": sel.cmmd, "rank": by_cmmd.index(sel.cmmd) + 1,
                          "geneval": probe.geneval(sel.blocks, desc=f"geneval {name}")}
        report[k] = {"subsets": len(by_cmmd), "teacher_geneval": probe.geneval([]), "selections": rows}
        print(f"\nk = {k} ({args.modification}; {len(by_cmmd)} subsets; teacher GenEval "
              f"{report[k]['teacher_geneval']:.3f})")
        print(f"{'selection':<20} {'blocks':<12} {'CMMD':>8} {'rank':>6} {'GenEval':>8}")
        for name, r in rows.items():
            print(f"{name:<20} {','.join(r['blocks']):<12} {r['cmmd']:>8.4f} {r['rank']:>6} {r['geneval']:>8.3f}")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{probe.evaluations} subsets rendered, {time.time() - started:.0f} s; {out / 'report.json'}")


if __name__ == "__main__":
    main()
