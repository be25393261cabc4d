"""Stage `evaluate`: render each benchmark's prompts with the teacher (and students) and score them.

    dvc repro evaluate        # shapes world: ~600 images at 32 px, about a minute on a CPU

Metrics (`evaluate.metrics`): CMMD / CLIP score / Fréchet distance against the reference set,
GenEval and DPG-Bench on their prompt files. Images land in `data/eval/<model>/<benchmark>/`;
a rerun renders only what is missing (see `ditcompress.metrics.benchmark`).
"""

from pathlib import Path

from ditcompress.runner import run_stage

OUT = Path("data/eval")


def main(params, run):
    from ditcompress.metrics.benchmark import run_evaluate

    return run_evaluate(params, OUT, run)


if __name__ == "__main__":
    run_stage("evaluate", ["data", "generate", "evaluate"], main)
