"""Eq 4.15–4.21: the ratios remove exactly N, their bounds, and k = 1."""

import pytest

from ditcompress.schedule import ScheduleError, importance, linear_ratios, slope

P = [1000, 800, 1200, 500]  # least important first


def test_the_slope_makes_the_removed_parameters_sum_to_n():
    for n in (1000.0, 1200.0, 1350.0):
        ratios = linear_ratios(P, 0.5, n)
        assert sum(p * c for p, c in zip(P, ratios)) == pytest.approx(n, rel=1e-12)
        x = slope(P, 0.5, n)
        assert ratios == pytest.approx([0.5 - i * x for i in range(len(P))], rel=1e-12)
        assert all(a >= b for a, b in zip(ratios, ratios[1:]))  # less important blocks lose more


def test_x_is_zero_when_n_is_s_times_all_parameters():
    n = 0.5 * sum(P)
    assert slope(P, 0.5, n) == 0.0 and linear_ratios(P, 0.5, n) == [0.5] * len(P)


def test_the_lower_bound_gives_a_last_ratio_of_zero():
    s, k = 0.5, len(P)
    lower = s * sum(P) - s * sum(p * i for i, p in enumerate(P)) / (k - 1)
    ratios = linear_ratios(P, s, lower)
    assert ratios[-1] == pytest.approx(0.0, abs=1e-12) and ratios[0] == s


def test_both_bounds_of_eq_4_21_raise_naming_s_n_k():
    s = 0.5
    with pytest.raises(ScheduleError, match=r"N=2000 > S·ΣP = 1750 for S=0.5, k=4 \(eq 4.21 upper bound"):
        linear_ratios(P, s, 2000)
    with pytest.raises(ScheduleError, match=r"N=100 < 966.667 = S·ΣP − S·Σ P_i\(i−1\)/\(k−1\) for S=0.5, k=4 "
                                            r"\(eq 4.21 lower bound"):
        linear_ratios(P, s, 100)


def test_one_block_needs_no_slope():
    assert slope([700], 0.4, 280) == 0.0
    assert linear_ratios([700], 0.4, 280) == [0.4]
    with pytest.raises(ScheduleError, match=r"N=100 < S·P_1 = 280 for S=0.4, k=1"):
        linear_ratios([700], 0.4, 100)


@pytest.mark.parametrize("args, message", [
    (([], 0.5, 10), "no block to compress"),
    ((P, 1.0, 10), r"base ratio S=1.0 must be in \(0, 1\)"),
    ((P, 0.0, 10), r"base ratio S=0.0 must be in \(0, 1\)"),
    ((P, 0.5, 0), "N=0 parameters to remove must be > 0"),
    ((P, 0.5, 5000), "N=5000 is more than the 3500 parameters of the k=4 blocks"),
    (([0, 10], 0.5, 1), "parameter counts must be > 0"),
])
def test_bad_inputs_are_one_line_errors(args, message):
    with pytest.raises(ScheduleError, match=message):
        linear_ratios(*args)


def test_importance_is_cmmd_per_removed_parameter():
    assert importance(0.2, 1000, 0.5) == pytest.approx(0.2 / 500)
    with pytest.raises(ScheduleError):
        importance(0.2, 1000, 1.0)
