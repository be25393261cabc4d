"""The rank rule of eq 4.9 against hand-computed values."""

import pytest

from ditcompress.compress import CompressionError, target_rank


@pytest.mark.parametrize("n, m, c, multiple, want", [
    (1152, 1152, 0.5, 1, 288),   # ⌊1152²·0.5 / 2304⌋
    (4608, 1152, 0.44, 1, 516),  # PixArt MLP: r = 512 is "approximately 44%" (5.1.6)
    (1152, 1152, 0.78, 1, 126),  # PixArt attention: r = 128 is "approximately 78%"
    (1152, 1152, 0.0, 1, 576),   # c = 0 keeps every parameter: k = nm / (n + m)
    (4, 4, 0.99, 1, 1),          # never below rank 1
    (1152, 1152, 0.5, 64, 256),  # rounded down to a multiple of 64
    (64, 64, 0.9, 16, 16),       # ... but never below the multiple
])
def test_target_rank_matches_eq_4_9(n, m, c, multiple, want):
    assert target_rank(n, m, c, multiple) == want


def test_target_rank_of_a_factorised_layer_removes_the_ratio_of_what_is_left():
    # P = r (n + m) for an already factorised layer (iterated SVD, 4.4.3)
    assert target_rank(1152, 4608, 0.5, rank=512) == 256
    assert target_rank(1152, 4608, 0.25, rank=3) == 2


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_ratio_outside_unit_interval_is_a_one_line_error(bad):
    with pytest.raises(CompressionError, match=rf"\[0, 1\) \(got {bad}\)") as err:
        target_rank(8, 8, bad)
    assert "\n" not in str(err.value)
