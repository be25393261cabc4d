"""The rank rule of eq 4.9 against hand-computed values and exact rational arithmetic."""

from fractions import Fraction
from math import floor

import pytest

from ditcompress.compress import CompressionError, target_rank


@pytest.mark.parametrize("n, m, c, want", [
    (1152, 1152, 0.5, 288),   # ⌊1152²·0.5 / 2304⌋
    (4608, 1152, 0.44, 516),  # PixArt MLP: r = 512 is "approximately 44%" (5.1.6)
    (1152, 1152, 0.78, 126),  # PixArt attention: r = 128 is "approximately 78%"
    (1152, 1152, 0.0, 576),   # c = 0 keeps every parameter: k = nm / (n + m)
    (1152, 1152, 0.99, 5),    # ⌊5.76⌋
    (3072, 12288, 0.5, 1228),  # Flux MLP: ⌊3072·12288·0.5 / 15360⌋ = ⌊1228.8⌋
    (4, 4, 0.99, 1),          # never below rank 1
])
def test_target_rank_matches_eq_4_9(n, m, c, want):
    assert target_rank(n, m, c) == want


@pytest.mark.parametrize("n, m", [(16, 12), (96, 16), (1152, 1152), (4608, 1152), (3072, 15360)])
@pytest.mark.parametrize("c", ["0", "0.25", "0.5", "0.625", "0.75", "0.875", "0.9375"])
def test_target_rank_is_the_exact_floor_of_eq_4_9(n, m, c):
    # dyadic ratios: the float computation is exact up to the final rounding, so compare with rationals
    exact = Fraction(n * m) * (1 - Fraction(c)) / (n + m)
    assert target_rank(n, m, float(c)) == max(1, floor(exact))


@pytest.mark.parametrize("n, m, c, multiple, want", [
    (1152, 1152, 0.5, 64, 256),   # 288 rounds down to a multiple of 64
    (4608, 1152, 0.44, 64, 512),  # 516 -> 512, the thesis's PixArt MLP rank
    (254, 254, 0.0, 64, 64),      # 127 -> 64: only ever down
    (128, 128, 0.0, 64, 64),      # 64 is a multiple already
    (1152, 1152, 0.99, 64, 5),    # 5 < 64: eq 4.9's rank, not 64
    (64, 64, 0.9, 16, 3),         # ⌊3.2⌋ = 3 < 16 stays 3
    (1152, 1152, 0.5, 1, 288),    # multiple 1 is eq 4.9 itself (the thesis)
])
def test_multiple_rounds_down_only_where_a_multiple_fits(n, m, c, multiple, want):
    assert target_rank(n, m, c, multiple) == want


@pytest.mark.parametrize("multiple", [1, 4, 8, 16, 64, 128])
def test_multiple_never_raises_the_rank_above_eq_4_9(multiple):
    for rank in range(1, 300):
        k = target_rank(1152, 4608, 0.0, rank=rank)  # eq 4.9 of a rank-r layer at c = 0 is r
        assert k == rank
        got = target_rank(1152, 4608, 0.0, multiple, rank=rank)
        assert got == (k if k < multiple else k - k % multiple)
        assert 1 <= got <= k


def test_target_rank_of_a_factorised_layer_removes_the_ratio_of_what_is_left():
    # P = r (n + m) for an already factorised layer (iterated SVD, 4.4.3)
    assert target_rank(1152, 4608, 0.5, rank=512) == 256
    assert target_rank(1152, 4608, 0.25, rank=3) == 2
    # a rank-40 layer at multiple 64: eq 4.9 gives 20, below the multiple, so 20
    assert target_rank(1152, 1152, 0.5, 64, rank=40) == 20
    assert target_rank(1152, 1152, 0.0, 64, rank=40) == 40


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_ratio_outside_unit_interval_is_a_one_line_error(bad):
    with pytest.raises(CompressionError, match=rf"\[0, 1\) \(got {bad}\)") as err:
        target_rank(8, 8, bad)
    assert "\n" not in str(err.value)


def test_multiple_below_one_is_a_one_line_error():
    with pytest.raises(CompressionError, match=r"multiple must be >= 1 \(got 0\)"):
        target_rank(8, 8, 0.5, 0)
