"""The tiny `AutoencoderKL` of the shapes world: 4x down-sampling, 4 (PixArt) or 16 (Flux) channels.

Trained with an L1 reconstruction loss and a small KL term (LDM's weighting: KL summed per
image against the per-image sum of pixel errors). Afterwards `scaling_factor` (and for Flux
`shift_factor`) are set from the latent statistics, as the real VAE configs carry them, so the
teachers see unit-variance latents: z = (mode - shift) · scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from ditcompress.utils.logging import get_logger
from ditcompress.zoo.common import Stopwatch, warmup_cosine
from ditcompress.zoo.config import VaeConfig

log = get_logger(__name__)


def build_vae(cfg: VaeConfig, latent_channels: int, image_size: int, seed: int) -> AutoencoderKL:
    """A seeded untrained VAE; `len(cfg.channels) - 1` halvings of the resolution."""
    n = len(cfg.channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(cfg.channels),
            layers_per_block=cfg.layers_per_block,
            latent_channels=latent_channels,
            norm_num_groups=cfg.norm_groups,
            sample_size=image_size,
            mid_block_add_attention=cfg.mid_attention,
            force_upcast=False,
        )


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, kl_weight: float, generator: torch.Generator,
             scale_equivariance: float = 0.0) -> tuple:
    """(loss, L1 per pixel) for a pixel batch `(B, 3, H, W)` in [-1, 1].

    `scale_equivariance` w > 0 adds w · L1(decode(pool₂ z), pool₂ x), pool₂ a 2x2 average: the
    decoder must also turn the half-resolution latent into the half-resolution image, which damps
    the latent's high spatial frequencies (Skorokhodov et al. 2025, "Improving the Diffusability
    of Autoencoders"; docs/shapes_world_experiments.md has what it did to the Flux teacher).
    """
    post = vae.encode(x).latent_dist
    z = post.sample(generator=generator)
    l1 = (vae.decode(z).sample - x).abs().mean()
    kl = post.kl().mean() / x[0].numel()  # per image, in units of the per-pixel L1 (LDM weighting)
    loss = l1 + kl_weight * kl
    if scale_equivariance:
        pooled = vae.decode(F.avg_pool2d(z, 2)).sample
        loss = loss + scale_equivariance * (pooled - F.avg_pool2d(x, 2)).abs().mean()
    return loss, l1


def train_vae(vae: AutoencoderKL, pixels: torch.Tensor, cfg: VaeConfig, seed: int,
              tracker=None, name: str = "vae", device: str | torch.device = "cpu") -> dict:
    """Train on `pixels` `(N, 3, H, W)` in [-1, 1] on `device`; returns timing and the final L1.

    The VAE ends on the CPU. Batches and posterior noise come from one seeded CPU generator on any device.
    """
    g = torch.Generator().manual_seed(seed)
    vae.to(device)
    pixels = pixels.to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = warmup_cosine(opt, warmup=min(50, cfg.steps // 10), total=cfg.steps)
    vae.train()
    clock, running = Stopwatch(), None
    for step in range(cfg.steps):
        idx = torch.randint(len(pixels), (cfg.batch_size,), generator=g)
        loss, l1 = vae_loss(vae, pixels[idx], cfg.kl_weight, g, cfg.scale_equivariance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = l1.item() if running is None else 0.98 * running + 0.02 * l1.item()
        if tracker is not None and (step % 50 == 0 or step == cfg.steps - 1):
            tracker.log_metrics({f"{name}/l1": running}, step=step)
    vae.cpu().eval()
    log.info("%s: %d steps in %.0f s (%.2f steps/s), L1 %.4f", name, cfg.steps, clock.seconds,
             clock.rate(cfg.steps), running)
    return {"l1": running, "seconds": clock.seconds, "steps_per_s": clock.rate(cfg.steps)}


@torch.no_grad()
def encode_modes(vae: AutoencoderKL, pixels: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Posterior means `(N, C, h, w)` of a pixel set, unnormalised."""
    return torch.cat([vae.encode(pixels[i : i + batch]).latent_dist.mode() for i in range(0, len(pixels), batch)])


def set_latent_scaling(vae: AutoencoderKL, modes: torch.Tensor, shift: bool) -> None:
    """Store `scaling_factor = 1/std` (and `shift_factor = mean` when `shift`) in the VAE config."""
    mean = modes.mean().item() if shift else 0.0
    std = (modes - mean).pow(2).mean().sqrt().item()
    vae.register_to_config(scaling_factor=1.0 / std, shift_factor=mean if shift else None)


@torch.no_grad()
def whiten_latents(vae: AutoencoderKL, modes: torch.Tensor, power: float) -> torch.Tensor:
    """Fold z' = Λ^-p·Uᵀ(z − μ) into `quant_conv` and its inverse into `post_quant_conv`.

    Λ, U: eigenvalues and eigenvectors of the channel covariance of `modes` `(N, C, h, w)`, μ their
    mean; p = `power` (0.5 whitens, 0.25 half-whitens). The tiny VAEs' latents are far from
    isotropic (docs/shapes_world_experiments.md), so at a given noise level the small directions
    drown long before the large ones; whitening makes them share the noise schedule. Decoding is
    unchanged up to float error, and the stock pipelines load the VAE as before. Only the
    posterior mean is transformed exactly: the log-variance channels are left as they are (the
    KL weight keeps them tiny), so `latent_dist.mode()` is exact and samples are approximate.
    Returns `modes` whitened, as the folded VAE now encodes them (up to float error).
    """
    c = modes.shape[1]
    z = modes.double().permute(0, 2, 3, 1).reshape(-1, c)
    mu = z.mean(0)
    eigvals, u = torch.linalg.eigh(torch.cov(z.T))
    eigvals = eigvals.clamp_min(eigvals.max() * 1e-8)
    w = torch.diag(eigvals.pow(-power)) @ u.T  # whitening, applied after quant_conv's mean rows
    w_inv = u @ torch.diag(eigvals.pow(power))
    q, pq = vae.quant_conv, vae.post_quant_conv
    qw, qb = q.weight.double()[:c, :, 0, 0], q.bias.double()[:c]
    q.weight[:c, :, 0, 0] = (w @ qw).to(q.weight.dtype)
    q.bias[:c] = (w @ (qb - mu)).to(q.bias.dtype)
    pw, pb = pq.weight.double()[:, :, 0, 0], pq.bias.double()
    pq.weight[:, :, 0, 0] = (pw @ w_inv).to(pq.weight.dtype)
    pq.bias[:] = (pw @ mu + pb).to(pq.bias.dtype)
    n, _, h, wd = modes.shape
    return ((z - mu) @ w.T).reshape(n, h, wd, c).permute(0, 3, 1, 2).to(modes.dtype)


def teacher_latents(vae: AutoencoderKL, pixels: torch.Tensor, *, shift: bool, whitening: float = 0.0) -> torch.Tensor:
    """Shape `vae`'s latent space for a teacher (optional whitening, then the scaling factors) and
    return the teacher-space latents of `pixels` `(N, 3, H, W)`."""
    modes = encode_modes(vae, pixels)
    if whitening:
        modes = whiten_latents(vae, modes, whitening)
    set_latent_scaling(vae, modes, shift=shift)
    return normalise_latents(vae, modes)


def normalise_latents(vae: AutoencoderKL, modes: torch.Tensor) -> torch.Tensor:
    """Teacher-space latents: (mode - shift) · scale, as the pipelines undo before decoding."""
    shift = vae.config.shift_factor or 0.0
    return (modes - shift) * vae.config.scaling_factor


def high_frequency_share(latents: torch.Tensor, cutoff: float = 0.25) -> float:
    """Share of the spatial power of `latents` `(N, C, h, w)` at frequencies of at least `cutoff`
    cycles per latent pixel along either axis (the per-channel mean removed first).

    A diagnostic of how diffusable a latent is (Skorokhodov et al. 2025): the shapes images pooled
    to the 8x8 latent grid have 0.29, the PixArt latent 0.36 and the default Flux latent 0.47
    (docs/shapes_world_experiments.md, "Diffusability").
    """
    centred = latents - latents.mean(dim=(0, 2, 3), keepdim=True)
    power = torch.fft.fft2(centred.double()).abs().pow(2).sum(dim=(0, 1))
    fy = torch.fft.fftfreq(latents.shape[-2], dtype=torch.float64).abs()
    fx = torch.fft.fftfreq(latents.shape[-1], dtype=torch.float64).abs()
    high = torch.maximum(fy[:, None], fx[None, :]) >= cutoff
    return (power[high].sum() / power.sum()).item()
