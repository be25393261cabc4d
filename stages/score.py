"""Stage `score`: every block's importance under each criterion, then the blocks to modify.

    dvc repro score                                          # greedy, 3 blocks removed (~3 min on 2 cores)
    dvc exp run -S score.selection.algorithm=optuna          # TPE seeded with the greedy prior
    dvc exp run -S score.modification=svd -S score.c_fixed=0.6

Outputs: data/score/importance.json, selection.json; plots/score/ (see `ditcompress.score.run`).
"""

from pathlib import Path

from ditcompress.runner import run_stage

OUT = Path("data/score")
PLOTS = Path("plots/score")


def main(params, run):
    from ditcompress.score.run import run_score

    return run_score(params, OUT, run, PLOTS)


if __name__ == "__main__":
    run_stage("score", ["score", "data", "generate", "evaluate"], main)
