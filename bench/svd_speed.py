"""Forward latency of a teacher transformer against SVD students with every block compressed.

    python bench/svd_speed.py --tiny --device cpu --iters 5                 # smoke run, ~10 s on a CPU
    python bench/svd_speed.py --model pixart-sigma --device cuda            # issue 3: PixArt-Σ, 512², bf16
    python bench/svd_speed.py --model flux-dev --device cuda --compile      # FLUX.1-dev, 1024², eager + compiled

Three variants of one model: the dense teacher; the student whose attention and MLP linears in
every block are factorised at `--ratio` with ranks from eq 4.9 as is; and the same student with
ranks rounded down to multiples of `--multiple` where eq 4.9's rank is at least that (`target_rank(..., multiple)`). Issue 3: on an
H100 in eager mode, PixArt-Σ with every block at 50% ran at 0.87x the teacher's speed with eq-4.9
ranks (288 and 460: unaligned for tensor cores) and at 1.18x with ranks rounded down to 64.

Weights are random (latency depends on shapes, not values; nothing is downloaded). The teacher is
built from the shipped config on the target device in the target dtype and timed; the students
are made from it in place, one after the other, so a single model is ever in memory (FLUX.1-dev:
24 GB in bf16). Each student gets the ranks `plan` computes on the dense teacher, swapped in as
`LowRankLinear` layers exactly as a saved student is rebuilt for loading (`build_student`), with
random factors instead of an SVD: the layers' shapes, dtype and layout are those `svd_compress`
gives, and the SVDs would not change a timing but cost 20–35 s per 1152×4608 matrix on a 2-core
CPU (PixArt-Σ has 280 such layers) and, on a GPU, time in proportion to FLUX's ~420 larger ones.

Inputs are random, in the family's layout for `adapter.predict`, which is what is timed:
latents `(B, C, res/8, res/8)`, text embeddings of the preset's sequence length (PixArt-Σ 300 T5
tokens with a padding mask, FLUX 512) and, for FLUX, the pooled CLIP vector and guidance. CFG
sampling runs the transformer on 2x the image batch: `--batch 2` is one image with CFG.

Prints one row per variant and mode: parameters, mean and spread of the per-call latency (GPU
synchronised around each call), speed relative to the teacher in the same mode (eager or
compiled; >1x is faster), and the ranks (`rank×layers`, and how many are multiples of
`--multiple`). A compiled row also gives its first call, which includes compilation.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import Counter
from dataclasses import replace

import torch
from torch import nn

from ditcompress.compress.errors import CompressionError
from ditcompress.compress.record import LowRankSpec, attach, record_of
from ditcompress.compress.svd import apply_record_structure, plan
from ditcompress.models.base import Conditioning
from ditcompress.models.presets import PRESETS
from ditcompress.models.registry import build_transformer, family_of_config, get_adapter, load_config
from ditcompress.models.tiny import TINY_SIZES

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
FAMILY_PRESET = {"pixart": "pixart-sigma", "flux": "flux-dev"}  # defaults for a config given by path
VAE_SCALE = 8  # both families' VAEs downsample 8x
TINY_RESOLUTION, TINY_TOKENS, TINY_MULTIPLE = 64, 8, 4


def build_teacher(config: dict, device, dtype: torch.dtype, seed: int = 0):
    """The transformer of `config` with random weights, allocated on `device` directly in `dtype`."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # no fp32 copy first: FLUX.1-dev would need 48 GB for it
    try:
        model = build_transformer(config, device=device)
    finally:
        torch.set_default_dtype(previous)
    # PixArt's position table is built in fp32 whatever the default; nn.Module's own `to`, because
    # diffusers' override warns about keeping an (empty) list of modules in fp32
    return nn.Module.to(model, dtype).eval()


def random_inputs(family: str, config: dict, batch: int, resolution: int, tokens: int, device, dtype):
    """`(latents, t, cond)` for `adapter.predict`, shaped like the family's real inference inputs."""
    side = resolution // VAE_SCALE
    if side % 2:
        raise SystemExit(f"--resolution {resolution}: the latent side {side} must be even (patch / packing 2)")
    g = torch.Generator(device="cpu").manual_seed(1)
    randn = lambda *shape: torch.randn(*shape, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    if family == "pixart":
        mask = torch.zeros(batch, tokens, dtype=torch.long, device=device)
        mask[:, : max(1, 3 * tokens // 4)] = 1  # prompts padded to the maximum length, as the T5 tokenizer does
        cond = Conditioning(randn(batch, tokens, config["caption_channels"]), attention_mask=mask)
        t = torch.full((batch,), 500, dtype=torch.long, device=device)  # DDPM step
        return randn(batch, config["in_channels"], side, side), t, cond
    cond = Conditioning(randn(batch, tokens, config["joint_attention_dim"]),
                        pooled=randn(batch, config["pooled_projection_dim"]))
    t = torch.full((batch,), 0.5, device=device, dtype=dtype)  # sigma
    return randn(batch, config["in_channels"] // 4, side, side), t, cond  # predict packs 2x2 patches


def student_specs(adapter, model, ratio: float, multiple: int) -> dict[str, LowRankSpec]:
    """Eq-4.9 rank of every attention and MLP linear of every block, rounded down to `multiple`."""
    ids = [ref.id for ref in adapter.blocks(model)]
    return {t.key: LowRankSpec(t.rank, t.layer.out_features, t.layer.in_features, t.layer.bias is not None)
            for t in plan(model, ids, ratio, multiple)}


def make_student(model, specs: dict[str, LowRankSpec]) -> None:
    """Turn `model` in place into the student with these factorised layers (as `build_student` does)."""
    record = replace(record_of(model), svd=dict(specs))
    apply_record_structure(model, record)  # replaces dense or low-rank layers alike: students chain
    attach(model, record)


def rank_summary(specs: dict[str, LowRankSpec], multiple: int) -> str:
    """`rank×count` of the commonest ranks, and how many are multiples of `multiple`."""
    if not specs:
        return "dense"
    counts = Counter(s.rank for s in specs.values())
    common = ", ".join(f"{r}×{n}" for r, n in counts.most_common(4))
    more = f", +{len(counts) - 4} more" if len(counts) > 4 else ""
    aligned = sum(n for r, n in counts.items() if r % multiple == 0)
    return f"{len(specs)} layers: {common}{more}; {aligned}/{len(specs)} multiples of {multiple}"


def sync(device) -> None:
    """Wait for queued GPU work, so the clock measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(adapter, model, inputs, warmup: int, iters: int, compile_model: bool) -> tuple[list[float], float]:
    """Seconds of each of `iters` timed forwards after `warmup` untimed ones, and of the first call."""
    if compile_model:
        torch._dynamo.reset()  # drop graphs of the previous variant (they hold its weights)
        model = torch.compile(model)
    latents, t, cond = inputs

    # a plain synchronised clock: `utils.benchmark.Timer.timeit` would add two untimed calls to
    # every measurement and, by default, run PyTorch on one CPU thread
    def seconds() -> float:
        """One forward, synchronised on both sides."""
        sync(latents.device)
        start = time.perf_counter()
        with torch.inference_mode():
            adapter.predict(model, latents, t, cond)
        sync(latents.device)
        return time.perf_counter() - start

    first = seconds()  # includes compilation when compiled
    for _ in range(warmup - 1):
        seconds()
    return [seconds() for _ in range(iters)], first


def device_name(device: str) -> str:
    """The GPU's name, or the CPU and its thread count."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    """Parse arguments, time teacher and students in eager (and compiled) mode, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pixart-sigma",
                        help="pixart-sigma, flux-dev or a PixArt/Flux transformer config.json")
    parser.add_argument("--tiny", action="store_true", help="shrink the config to test size (quick CPU smoke run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1…")
    parser.add_argument("--dtype", choices=list(DTYPES), help="default: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--batch", type=int, default=2, help="transformer batch (2 = one image with CFG)")
    parser.add_argument("--resolution", type=int, help="image side in pixels (default: the preset's; 64 with --tiny)")
    parser.add_argument("--ratio", type=float, default=0.5, help="parameter-removal ratio c of eq 4.9")
    parser.add_argument("--multiple", type=int, help="round ranks down to a multiple of this (default: 64; 4 with "
                        "--tiny, whose layers are too narrow for 64)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed calls before timing (the first always runs: it compiles)")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per variant and mode")
    parser.add_argument("--compile", action="store_true", help="also time each variant under torch.compile")
    args = parser.parse_args()
    if args.iters < 1 or (args.multiple is not None and args.multiple < 1):
        parser.error("--iters and --multiple must be at least 1")

    dtype_name = args.dtype or ("bf16" if torch.device(args.device).type == "cuda" else "fp32")
    dtype = DTYPES[dtype_name]
    config = load_config(args.model)
    family = family_of_config(config)
    adapter, preset = get_adapter(family), PRESETS[FAMILY_PRESET[family]]
    if args.tiny:
        config = {**config, **TINY_SIZES[family]}
    resolution = args.resolution or (TINY_RESOLUTION if args.tiny else preset.resolution)
    tokens = TINY_TOKENS if args.tiny else preset.max_sequence_length
    multiple = args.multiple if args.multiple is not None else (TINY_MULTIPLE if args.tiny else 64)

    model = build_teacher(config, args.device, dtype)
    inputs = random_inputs(family, config, args.batch, resolution, tokens, args.device, dtype)
    try:
        variants = [("teacher", {}), ("student, eq 4.9 ranks", student_specs(adapter, model, args.ratio, 1))]
        if multiple > 1:
            variants.append((f"student, ranks ⌊·⌋{multiple}", student_specs(adapter, model, args.ratio, multiple)))
    except CompressionError as e:
        raise SystemExit(f"--ratio {args.ratio} --multiple {multiple}: {e}") from None
    modes = [False, True] if args.compile else [False]

    latent = tuple(inputs[0].shape[1:])
    print(f"# SVD student speed: {args.model}{' (tiny)' if args.tiny else ''}, {len(adapter.blocks(model))} blocks "
          f"at ratio {args.ratio}, batch {args.batch}, {resolution}² (latent {'×'.join(map(str, latent))}, "
          f"{tokens} text tokens), {dtype_name}, {device_name(args.device)}, {args.warmup} warm-up + "
          f"{args.iters} timed calls")
    print("| variant | mode | params (M) | mean ms | ± std | speed vs teacher | ranks |")
    print("|---|---|---|---|---|---|---|")
    teacher_ms = {}
    for name, specs in variants:
        if specs:
            make_student(model, specs)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        params_m = f"{params:.1f}" if params >= 1 else f"{params:.4f}"  # tiny models have a few thousand
        for compiled in modes:
            times, first = time_forward(adapter, model, inputs, args.warmup, args.iters, compiled)
            ms = 1e3 * statistics.mean(times)
            std = 1e3 * statistics.stdev(times) if len(times) > 1 else 0.0
            teacher_ms.setdefault(compiled, ms)
            mode = f"compiled (1st call {first:.1f} s)" if compiled else "eager"
            print(f"| {name} | {mode} | {params_m} | {ms:.2f} | {std:.2f} | {teacher_ms[compiled] / ms:.2f}× | "
                  f"{rank_summary(specs, multiple)} |", flush=True)


if __name__ == "__main__":
    main()
