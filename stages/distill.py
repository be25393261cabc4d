"""Stage `distill`: recover the compressed student by knowledge distillation (thesis 4.5, 5.1.4–5.1.5).

    dvc repro distill                              # shapes world: a few minutes on 2 CPU cores
    dvc exp run -S distill.loss=out                # out | standard | hybrid | normalized | normalized_hybrid
    dvc exp run -S distill.protocol=two_stage      # three_stage | two_stage | laion_only
    accelerate launch --num_processes 2 stages/distill.py            # DDP (GPUs, or --cpu processes)
    accelerate launch --config_file configs/accelerate/fsdp_flux.yaml stages/distill.py   # FLUX.1-dev

Output: models/students/distilled (safetensors + compression.json); data/distill (the cached
encodings); plots/distill; metrics/distill.json. A killed run's checkpoint waits in
checkpoints/distill/<digest> (distill.checkpoint_dir) for the next run with the same settings.
"""

from pathlib import Path

from ditcompress.runner import run_stage

OUT = Path("models/students/distilled")


def main(params, run):
    from ditcompress.distill.stage import run_distill

    return run_distill(params, OUT, "data/distill", run, plots_dir="plots/distill")


if __name__ == "__main__":
    run_stage("distill", ["distill", "generate", "caption", "evaluate"], main)
