"""Stage `schedule`: compress and retrain round by round down to a target size (thesis 4.6, 5.1.3, 5.1.8).

    dvc repro schedule                                          # progressive removal to half the teacher
    dvc exp run -S schedule.kind=one_shot                       # one round, as many rounds' steps
    dvc exp run -S schedule.kind=linear_progressive             # eq 4.16 ratios, iterated SVD
    dvc exp run -S schedule.blocks_per_round=null -S schedule.cmmd_threshold=0.4   # CMMD-triggered rounds

Output: models/students/schedule/round-<k> (each round's retrained student) and rounds.json;
plots/schedule (quality against size, blocks per round); metrics/schedule.json. A killed run
resumes from schedule.checkpoint_dir/<digest> at the round and step where it stopped.
"""

from pathlib import Path

from ditcompress.runner import run_stage

OUT = Path("models/students/schedule")


def main(params, run):
    from ditcompress.schedule.run import run_schedule

    return run_schedule(params, OUT, "data/schedule", run, plots_dir="plots/schedule")


if __name__ == "__main__":
    run_stage("schedule", ["schedule", "distill", "score", "data", "generate", "caption", "evaluate"], main)
