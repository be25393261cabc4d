"""Sample grids show every image at integer scale, captions underneath."""

import numpy as np
from PIL import Image

from ditcompress.utils.grid import sample_grid


def test_grid_tiles_are_the_upscaled_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    grid = np.asarray(sample_grid(images, ncol=3))
    assert grid.shape == (2 * 130 + 2, 3 * 130 + 2, 3)  # 32 px tiles upscaled x4, 2 px padding
    for k in range(5):
        y0, x0 = 2 + (k // 3) * 130, 2 + (k % 3) * 130
        np.testing.assert_array_equal(grid[y0 : y0 + 128 : 4, x0 : x0 + 128 : 4], images[k])
    assert (grid[2 + 130 :, 2 + 2 * 130 :] == 255).all()  # the sixth cell stays empty


def test_channel_first_floats_and_pil_lists_give_the_same_grid_and_captions_add_text():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    plain = np.asarray(sample_grid(images))
    floats = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_array_equal(np.asarray(sample_grid(floats)), plain)
    np.testing.assert_array_equal(np.asarray(sample_grid([Image.fromarray(im) for im in images])), plain)
    captioned = np.asarray(sample_grid(images, ["a photo of a red circle right of a blue square"] * 4))
    assert captioned.shape[0] > plain.shape[0] and captioned.shape[1] == plain.shape[1]
    text = captioned[2 + 128 + 2 : 2 + 128 + 24, 2 : 130]  # under the first tile
    assert (text < 128).any()  # dark text pixels
