"""`run_generate` in its own process, for the kill and multi-process tests of test_generate.py.

    python generate_worker.py CONFIG_JSON CAPTIONS PIPELINE OUT [--log-dir DIR] [--stall-after K --marker FILE]

Each published shard is appended to LOG_DIR/rank-R.txt (one file a rank: two ranks printing to
one pipe can interleave inside a line). With --stall-after K the process,
once K shards are published, touches FILE and hangs with the next shard fully written to its
temp file but not yet published, so the test can SIGKILL it at the worst moment. Intra-op
threads are pinned to 1 so CPU results match the in-process reference.
"""

import argparse
import time
from pathlib import Path

import torch

from ditcompress.data import GenerateConfig, run_generate
from ditcompress.data import shards


def watch_publish(rank: int, log_dir: Path | None, stall_after: int | None, marker: Path | None) -> None:
    """Log each published shard's name; optionally hang before the (k+1)-th, signalling the test."""
    publish, published = shards.publish, []

    def watched(tmp, final):
        if final.suffix == ".tar":
            if len(published) == stall_after:
                marker.touch()
                time.sleep(600)
            published.append(final)
        publish(tmp, final)
        if final.suffix == ".tar" and log_dir is not None:
            with open(log_dir / f"rank-{rank}.txt", "a") as log:
                log.write(final.name + "\n")

    shards.publish = watched


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("config", "captions", "pipeline", "out"):
        parser.add_argument(name)
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--stall-after", type=int)
    parser.add_argument("--marker", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    process = shards.current_process()
    watch_publish(process.process_index, args.log_dir, args.stall_after, args.marker)
    run_generate(GenerateConfig.model_validate_json(args.config), args.captions, args.pipeline, "pixart", args.out)
