"""Linear progressive compression (thesis 4.6.3): importance per removed parameter and the ratios.

Blocks are ranked by s_i = CMMD_i / (P_i · c_fixed) (eq 4.15), least important first. The least
important block is compressed by the base ratio S, each next one by x less (eq 4.16), with the
slope x chosen so that the parameters removed, Σ P_i c_i (eq 4.17), equal N (eq 4.19). Eq 4.21
bounds N: at most S·ΣP (else the ratio would grow with importance) and at least the N at which
the last block's ratio reaches 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from ditcompress.errors import UserError


class ScheduleError(UserError):
    """A schedule's inputs violate its bounds (eq 4.21), named in one line."""


def importance(cmmd: float, params: int, c_fixed: float) -> float:
    """s_i = CMMD_i / (P_i · c_fixed) (eq 4.15): the CMMD a block costs per parameter it gives up."""
    if params <= 0 or not 0 < c_fixed < 1:
        raise ScheduleError(f"importance: need P_i > 0 and c_fixed in (0, 1) (got P_i={params}, c_fixed={c_fixed})")
    return cmmd / (params * c_fixed)


def slope(params: Sequence[int], base_ratio: float, remove: float) -> float:
    """x of eq 4.19 for block sizes ordered least important first; 0 for a single block."""
    s, total = base_ratio, float(sum(params))
    weighted = float(sum(p * i for i, p in enumerate(params)))  # Σ P_i (i − 1)
    return 0.0 if weighted == 0 else (s * total - remove) / weighted


def linear_ratios(params: Sequence[int], base_ratio: float, remove: float) -> list[float]:
    """c_i = S − (i − 1)·x (eq 4.16) for blocks of `params` parameters, least important first.

    `remove` is N, the parameters to remove in this round, and k = len(params). Raises
    `ScheduleError` naming S, N, k and the bound when eq 4.21 does not hold; a single block
    (k = 1) takes c_1 = N / P_1, which must be S (the lower bound of eq 4.21 has no k − 1 there).
    """
    k = len(params)
    s = base_ratio
    if k == 0:
        raise ScheduleError("linear ratios: no block to compress (k = 0)")
    if any(p <= 0 for p in params):
        raise ScheduleError(f"linear ratios: block parameter counts must be > 0 (got {list(params)})")
    if not 0 < s < 1:
        raise ScheduleError(f"linear ratios: base ratio S={s} must be in (0, 1)")
    total = float(sum(params))
    if remove <= 0:
        raise ScheduleError(f"linear ratios: N={remove:g} parameters to remove must be > 0")
    if remove > total:
        raise ScheduleError(f"linear ratios: N={remove:g} is more than the {int(total)} parameters of the k={k} blocks")
    upper = s * total
    tol = 1e-9 * max(total, 1.0)  # N computed from ratios carries float rounding
    if remove > upper + tol:
        raise ScheduleError(f"linear ratios: N={remove:g} > S·ΣP = {upper:g} for S={s}, k={k} (eq 4.21 upper bound: "
                            "the more important blocks would be compressed more)")
    if k == 1:
        if remove < upper - tol:
            raise ScheduleError(f"linear ratios: N={remove:g} < S·P_1 = {upper:g} for S={s}, k=1 (one block is "
                                "compressed by S itself)")
        return [s]
    weighted = float(sum(p * i for i, p in enumerate(params)))
    lower = upper - s * weighted / (k - 1)
    if remove < lower - tol:
        raise ScheduleError(f"linear ratios: N={remove:g} < {lower:g} = S·ΣP − S·Σ P_i(i−1)/(k−1) for S={s}, k={k} "
                            "(eq 4.21 lower bound: the most important block's ratio would be negative)")
    x = slope(params, s, remove)
    return [max(s - i * x, 0.0) for i in range(k)]
