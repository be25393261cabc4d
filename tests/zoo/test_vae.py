"""The tiny VAE: trains, stores its latent statistics in the config, reloads exactly."""

import numpy as np
import torch
from diffusers import AutoencoderKL

from ditcompress.shapes.dataset import load_split
from ditcompress.zoo.common import images_to_tensor, tensor_to_images
from ditcompress.zoo.vae import (build_vae, encode_modes, normalise_latents, set_latent_scaling, teacher_latents,
                                 train_vae, vae_loss, high_frequency_share)


def test_pixel_conversion_round_trips():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    x = images_to_tensor(images)
    assert x.shape == (3, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(tensor_to_images(x), images)


def test_training_lowers_reconstruction_error(tiny_cfg, shapes_dir):
    pixels = images_to_tensor(load_split(shapes_dir / "train").images)
    cfg = tiny_cfg.vae.model_copy(update={"steps": 30})
    vae = build_vae(cfg, 4, pixels.shape[-1], seed=0)
    with torch.no_grad():
        before = (vae.decode(encode_modes(vae, pixels)).sample - pixels).abs().mean()
    train_vae(vae, pixels, cfg, seed=0)
    with torch.no_grad():
        after = (vae.decode(encode_modes(vae, pixels)).sample - pixels).abs().mean()
    assert after < 0.7 * before


def test_scale_equivariance_loss_matches_its_formula(tiny_cfg):
    """loss = L1(D(z), x) + kl_w·KL/numel + w·L1(D(pool₂ z), pool₂ x), z drawn as the loss draws it."""
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    vae = build_vae(tiny_cfg.vae, 16, 16, seed=0)
    with torch.no_grad():
        base, l1 = vae_loss(vae, x, 1e-3, torch.Generator().manual_seed(5))
        loss, l1_se = vae_loss(vae, x, 1e-3, torch.Generator().manual_seed(5), scale_equivariance=2.0)
        post = vae.encode(x).latent_dist
        z = post.sample(generator=torch.Generator().manual_seed(5))
        pooled = vae.decode(torch.nn.functional.avg_pool2d(z, 2)).sample
        x_half = x.reshape(2, 3, 8, 2, 8, 2).mean(dim=(3, 5))
        expected_se = (pooled - x_half).abs().mean()
        expected_base = (vae.decode(z).sample - x).abs().mean() + 1e-3 * post.kl().mean() / x[0].numel()
    assert pooled.shape == x_half.shape == (2, 3, 8, 8)
    torch.testing.assert_close(l1_se, l1)
    torch.testing.assert_close(base, expected_base)
    torch.testing.assert_close(loss, expected_base + 2.0 * expected_se)
    assert expected_se > 0.01  # the term is not vanishing on an untrained VAE


def test_scaling_makes_latents_standard(tiny_cfg, shapes_dir):
    pixels = images_to_tensor(load_split(shapes_dir / "train").images)
    for channels, shift in ((4, False), (16, True)):
        vae = build_vae(tiny_cfg.vae, channels, pixels.shape[-1], seed=0)
        with torch.no_grad():
            modes = encode_modes(vae, pixels)
        set_latent_scaling(vae, modes, shift=shift)
        z = normalise_latents(vae, modes)
        assert (vae.config.shift_factor is not None) == shift
        torch.testing.assert_close(z.pow(2).mean() if not shift else z.var(correction=0), torch.tensor(1.0))
        if shift:
            torch.testing.assert_close(z.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)


def _channel_cov(z: torch.Tensor) -> torch.Tensor:
    return torch.cov(z.double().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).T)


def test_whitening_reshapes_the_spectrum_and_keeps_the_decoder(tiny_cfg, shapes_dir, tmp_path):
    """z' = Λ^-p·Uᵀ(z − μ): covariance Λ^(1-2p) in the eigenbasis (identity at p = 0.5), the
    decoded images unchanged, and the folded VAE reloads through the stock loader."""
    pixels = images_to_tensor(load_split(shapes_dir / "train").images)
    for power in (0.5, 0.25):
        vae = build_vae(tiny_cfg.vae, 16, pixels.shape[-1], seed=0)
        with torch.no_grad():
            modes = encode_modes(vae, pixels)
            before = vae.decode(modes).sample
        eigvals = torch.linalg.eigvalsh(_channel_cov(modes))
        z = teacher_latents(vae, pixels, shift=True, whitening=power)
        with torch.no_grad():
            raw = encode_modes(vae, pixels)
            torch.testing.assert_close(vae.decode(raw).sample, before, atol=1e-4, rtol=0)
        torch.testing.assert_close(raw.double().mean((0, 2, 3)), torch.zeros(16, dtype=torch.double), atol=1e-4, rtol=0)
        expected = eigvals.pow(1 - 2 * power)
        expected = expected / expected.mean()  # the scaling factor normalises the total variance
        cov = _channel_cov(z)
        torch.testing.assert_close(torch.linalg.eigvalsh(cov), expected, rtol=1e-3, atol=1e-6)
        if power == 0.5:
            torch.testing.assert_close(cov, torch.eye(16, dtype=torch.double), atol=1e-3, rtol=0)
        vae.save_pretrained(tmp_path / str(power))
        with torch.no_grad():
            loaded = AutoencoderKL.from_pretrained(tmp_path / str(power))
            torch.testing.assert_close(encode_modes(loaded, pixels), raw, rtol=0, atol=0)


def test_reload_gives_identical_outputs(tiny_cfg, tmp_path):
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    vae = build_vae(tiny_cfg.vae, 4, 24, seed=0)
    vae.register_to_config(scaling_factor=0.5)
    vae.save_pretrained(tmp_path)
    fresh = build_vae(tiny_cfg.vae, 4, 24, seed=1)
    loaded = AutoencoderKL.from_pretrained(tmp_path)
    with torch.no_grad():
        ref = vae.decode(encode_modes(vae, x)).sample
        assert not torch.allclose(fresh.decode(encode_modes(fresh, x)).sample, ref)
        torch.testing.assert_close(loaded.decode(encode_modes(loaded, x)).sample, ref, rtol=0, atol=0)
    assert loaded.config.scaling_factor == 0.5 and list(loaded.config.block_out_channels) == [8, 8, 8]


def test_high_frequency_share_of_closed_form_patterns():
    n = torch.arange(8, dtype=torch.float64)
    smooth = torch.cos(2 * torch.pi * n / 8)[None, None, :, None].expand(2, 3, 8, 8)  # 1/8 cycle per pixel
    checker = ((-1.0) ** (n[:, None] + n[None, :]))[None, None].expand(2, 3, 8, 8)  # 1/2 cycle per pixel
    assert high_frequency_share(smooth) < 1e-12
    assert abs(high_frequency_share(checker) - 1.0) < 1e-12
    # mean square 1 (checkerboard) against 1/2 (cosine), so 1 / (1 + 1/2) of the power is high,
    # whatever the per-channel offsets
    mix = smooth + checker + torch.tensor([0.0, 5.0, -3.0])[None, :, None, None]
    assert abs(high_frequency_share(mix) - 2 / 3) < 1e-9
    # a quarter cycle per pixel counts as high at the default cutoff, not at 0.3
    quarter = torch.cos(2 * torch.pi * n / 4)[None, None, None, :].expand(1, 1, 8, 8)
    assert abs(high_frequency_share(quarter) - 1.0) < 1e-12 and high_frequency_share(quarter, cutoff=0.3) < 1e-12
