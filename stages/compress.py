"""Stage `compress`: the student of one operator on the score stage's blocks, before retraining.

    dvc repro compress                                    # remove the blocks score selected
    dvc exp run -S compress.method=svd -S compress.ratio=0.6   # or attention_dominant, -S compress.ranks=...
    dvc exp run -S compress.method=grasp                  # SVD keeping the singular values of largest gradient
    dvc exp run -S 'compress.blocks=["3","4"]'            # blocks by hand (score is not consulted)

Output: models/students/compressed (safetensors + compression.json); metrics/compress.json.
"""

from pathlib import Path

from ditcompress.runner import run_stage

OUT = Path("models/students/compressed")


def main(params, run):
    from ditcompress.compress.stage import run_compress

    return run_compress(params, OUT, run)


if __name__ == "__main__":
    run_stage("compress", ["compress", "score", "generate", "evaluate"], main)
