"""How much a shapes teacher's prediction depends on its T5 tokens and (Flux) on its CLIP pooled vector.

    python bench/teacher_conditioning.py [--family flux] [--pipeline models/shapes/flux]
    python bench/teacher_conditioning.py --family pixart          # the reference: T5 tokens only

For pairs of prompts A, B it evaluates the teacher's prediction of the clean latent,
x̂0(x_t; T5 tokens, pooled vector), on 64 fixed noise latents at two noise levels, σ = 0.9 and 0.6
of rectified flow (signal-to-noise ratios 0.012 and 0.44, where layouts and classes are decided;
PixArt at the DDPM timestep of the same ratio), and prints |x̂0(T5_A, pooled_B) − x̂0(A, A)| /
|x̂0(A, A)| (the pooled vector swapped), the same with the T5 tokens swapped, and with both. x̂0
rather than the raw output, so that the families compare: Flux's velocity ε − x0 and PixArt's v
weigh the noise differently. A teacher that binds classes, colours and positions to
the words must depend on its T5 tokens, and on their order ("a triangle above a bar" against "a
bar above a triangle"): the pooled vector is one global code of the whole caption. How the
experiment log's conditioning figures were measured; runs in seconds.
"""

from __future__ import annotations

import argparse

import torch

from ditcompress.models.base import Conditioning
from ditcompress.models.registry import get_adapter

PAIRS = [
    ("a photo of a red circle", "a photo of a blue bar"),
    ("a photo of a circle and a bar", "a photo of a triangle and a circle"),
    ("a photo of a triangle above a bar", "a photo of a bar above a triangle"),
    ("a photo of a yellow circle and a purple bar", "a photo of a purple circle and a yellow bar"),
]
SIGMAS = (0.9, 0.6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["pixart", "flux"], default="flux")
    ap.add_argument("--pipeline", help="default: models/shapes/<family>")
    ap.add_argument("--max-length", type=int, default=16, help="T5 tokens per prompt (the presets')")
    ap.add_argument("--image-size", type=int, default=32, help="pixels per side (the shapes world's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    adapter = get_adapter(args.family)
    pipe = adapter.load_pipeline(args.pipeline or f"models/shapes/{args.family}")
    side = args.image_size // pipe.vae_scale_factor  # 8x8 latents: 32 px images through a 4x VAE
    x = torch.randn(64, pipe.vae.config.latent_channels, side, side, generator=torch.Generator().manual_seed(0))

    def time_of(sigma: float) -> torch.Tensor:
        """Flux: σ itself; PixArt: the DDPM timestep whose ᾱ gives the same signal-to-noise ratio."""
        if args.family == "flux":
            return torch.tensor(sigma)
        snr = ((1 - sigma) / sigma) ** 2
        return (pipe.scheduler.alphas_cumprod - snr / (1 + snr)).abs().argmin()

    def clean(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model output turned into its prediction of x0 at the noisy input `x`."""
        if args.family == "flux":
            return x - t * out  # x_t = (1 − σ)·x0 + σ·ε and out = ε − x0
        ab = pipe.scheduler.alphas_cumprod[t]
        if pipe.scheduler.config.prediction_type == "v_prediction":
            return ab.sqrt() * x - (1 - ab).sqrt() * out
        return (x - (1 - ab).sqrt() * out) / ab.sqrt()

    def output(tokens: Conditioning, pooled: Conditioning, t: torch.Tensor) -> torch.Tensor:
        n = len(x)
        cond = Conditioning(
            prompt_embeds=tokens.prompt_embeds.expand(n, -1, -1),
            attention_mask=None if tokens.attention_mask is None else tokens.attention_mask.expand(n, -1),
            pooled=None if pooled.pooled is None else pooled.pooled.expand(n, -1))
        with torch.no_grad():
            return clean(adapter.predict(pipe.transformer, x, t, cond), t)

    print(f"{'prompt A':45s} {'prompt B':45s} sigma  swap pooled  swap T5  swap both")
    for a, b in PAIRS:
        ca, cb = (adapter.encode_prompts(pipe, [p], args.max_length) for p in (a, b))
        for sigma in SIGMAS:
            t = time_of(sigma)
            ref = output(ca, ca, t)
            rel = [float((output(tok, pool, t) - ref).norm() / ref.norm()) for tok, pool in ((ca, cb), (cb, ca), (cb, cb))]
            print(f"{a:45s} {b:45s} {sigma:5.1f}  {rel[0]:11.3f}  {rel[1]:7.3f}  {rel[2]:9.3f}")


if __name__ == "__main__":
    main()
