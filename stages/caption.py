"""Stage `caption`: caption an image collection (thesis 4.3.1: LAION-aesthetic recaptioned by JoyCaption).

    dvc repro caption                      # shapes world: reads each image's scene, seconds
    accelerate launch stages/caption.py    # a VLM on N GPUs: each process writes its own shards

Resumable: rerunning continues with the shards that are missing; a run with other settings or
other images in `data/captions` is replaced (the output follows params.yaml).
"""

from pathlib import Path

from ditcompress.runner import run_stage

OUT = Path("data/captions")


def main(params, run):
    from ditcompress.data.caption import run_caption

    return run_caption(params.caption, params.caption.source, OUT, run, restart_if_changed=True)


if __name__ == "__main__":
    run_stage("caption", ["caption"], main)
