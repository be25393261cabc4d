"""`run_generate` in its own process, for the kill and multi-process tests of test_generate.py.

    python generate_worker.py CONFIG_JSON CAPTIONS PIPELINE OUT [--stall-after K --marker FILE]

Each published shard is printed as `rank R published NAME`. With --stall-after K the process,
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


def watch_publish(rank: int, stall_after: int | None, marker: Path | None) -> None:
    """Print `rank R published NAME` per shard; optionally hang before the (k+1)-th, signalling the test."""
    publish, published = shards.publish, []

    def watched(tmp, final):
        if final.suffix == ".tar":
            if len(published) == stall_after:
                marker.touch()
                time.sleep(600)
            published.append(final)
        publish(tmp, final)
        if final.suffix == ".tar":
            print(f"rank {rank} published {final.name}", flush=True)

    shards.publish = watched


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("config", "captions", "pipeline", "out"):
        parser.add_argument(name)
    parser.add_argument("--stall-after", type=int)
    parser.add_argument("--marker", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    process = shards.current_process()
    watch_publish(process.process_index, args.stall_after, args.marker)
    run_generate(GenerateConfig.model_validate_json(args.config), args.captions, args.pipeline, "pixart", args.out)
