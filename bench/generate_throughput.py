"""Generation throughput of the `generate` stage: images/s against batch size.

    python bench/generate_throughput.py                                   # CPU, shapes-world teacher size
    python bench/generate_throughput.py --size pixart-sigma --device cuda --dtype bfloat16 \\
        --batch-sizes 1,4,8,16,32                                         # real PixArt-Σ size, 512²

Times `Renderer.render` (ditcompress.sampling), the stage's per-batch call: the full sampling loop
(CFG doubles the transformer batch) plus VAE decode, from precomputed text embeddings. Text encoding happens once
per prompt and is left out. Weights are random (speed does not depend on them) unless
`--pipeline` loads a saved one, e.g. `models/shapes/pixart` after the pretrain stage. Sizes:
shapes = the PixArt teacher of an earlier zoo (8 blocks, width 96 on a 2x VAE, 32 px, 16 text tokens
of width 64, 20 steps); the zoo's teacher is now width 128 (4 heads x 32) on a 4x VAE, timed with
`--pipeline models/shapes/pixart`;
pixart-sigma = the shipped PixArt-Σ-XL-2-512 config with an SD-style VAE (512 px, 300 T5 tokens
of width 4096, 20 steps, tab. 4.3). Prints a table; `--out` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from ditcompress.data.config import GenerateConfig
from ditcompress.models.base import Conditioning
from ditcompress.sampling import Renderer

# size -> transformer overrides, VAE channels, (tokens, text width), image side
SIZES = {
    "shapes": (dict(num_layers=8, num_attention_heads=4, attention_head_dim=24, cross_attention_dim=96,
                    caption_channels=64, sample_size=16), (32, 64), (16, 64), 32),
    "pixart-sigma": ({}, (128, 256, 512, 512), (300, 4096), 512),
}


def random_pipeline(size: str, device, dtype):
    """A PixArtSigmaPipeline of `size` with random weights and no text encoder (embeddings are given)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline

    from ditcompress.models.registry import build_transformer, load_config

    overrides, channels, _, _ = SIZES[size]
    torch.manual_seed(0)
    transformer = build_transformer({**load_config("pixart-sigma"), **overrides}, device=device)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * len(channels),
                        up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=channels,
                        layers_per_block=2 if size == "pixart-sigma" else 1, latent_channels=4,
                        norm_num_groups=32 if size == "pixart-sigma" else 8)
    pipe = PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler()).to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_conditioning(n: int, tokens: int, width: int, device, dtype) -> Conditioning:
    """Text embeddings of the encoder's shape, prompts of 3/4 of the maximum length."""
    mask = torch.zeros(n, tokens, dtype=torch.long, device=device)
    mask[:, : max(1, 3 * tokens // 4)] = 1
    return Conditioning(torch.randn(n, tokens, width, device=device, dtype=dtype), mask)


def sync(device) -> None:
    """Wait for queued GPU work, so the clock measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(renderer: Renderer, prompts: list[str], batch: int, repeats: int, device) -> dict:
    """Images/s from the median of `repeats` timed batches (robust to a shared machine), after a warm-up."""
    def run():
        renderer.render(prompts[:batch], list(range(batch)))

    run()
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    row = {"batch_size": batch, "images_per_s": batch / seconds, "s_per_batch": seconds}
    if torch.device(device).type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def main() -> None:
    """Parse arguments, time each batch size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="shapes")
    parser.add_argument("--pipeline", help="a saved PixArt pipeline instead of random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", default="1,4,16,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    dtype_name = args.dtype or ("bfloat16" if torch.device(args.device).type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    overrides, _, (tokens, width), side = SIZES[args.size]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    cfg = GenerateConfig(height=side, width=side, num_inference_steps=args.steps, max_sequence_length=tokens,
                         torch_dtype=dtype_name, batch_size=max(batches))
    prompts = [f"a photo of {i} red circles" for i in range(max(batches))]
    if args.pipeline:
        renderer = Renderer.load(args.pipeline, "pixart", cfg, args.device)
    else:
        renderer = Renderer(random_pipeline(args.size, args.device, dtype), "pixart", cfg)
        renderer.remember([*prompts, cfg.negative_prompt],
                          random_conditioning(len(prompts) + 1, tokens, width, args.device, dtype))
    renderer.encode(prompts)  # text encoding is left out of the timings
    pipe = renderer.pipeline

    device_name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in pipe.transformer.parameters()) / 1e6
    print(f"# generate throughput: {args.pipeline or args.size} ({params:.1f} M transformer params), {side}², "
          f"{args.steps} steps, CFG {cfg.guidance_scale}, {dtype_name}, {device_name}")
    print("| batch | images/s | s/batch |" + (" peak GiB |" if "cuda" in str(args.device) else ""))
    rows = []
    for batch in batches:
        row = measure(renderer, prompts, batch, args.repeats, args.device)
        rows.append(row)
        mem = f" {row['peak_mem_gib']:.1f} |" if "peak_mem_gib" in row else ""
        print(f"| {batch} | {row['images_per_s']:.2f} | {row['s_per_batch']:.2f} |{mem}", flush=True)
    if args.out:
        meta = {"size": args.size, "pipeline": args.pipeline, "device": device_name, "dtype": dtype_name,
                "steps": args.steps, "resolution": side}
        with open(args.out, "w") as f:
            json.dump({**meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
