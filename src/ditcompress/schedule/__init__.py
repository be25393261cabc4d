"""Pruning schedules (thesis 4.6): the per-block ratios of linear progressive compression.

    from ditcompress.schedule import linear_ratios, ScheduleError
    ratios = linear_ratios([p1, p2, p3], base_ratio=0.5, remove=n)   # eq 4.16 with the slope of eq 4.19

The schedule loops (one-shot, progressive, linear progressive) are not built yet.
"""

from ditcompress.schedule.linear import ScheduleError, importance, linear_ratios, slope

__all__ = ["ScheduleError", "importance", "linear_ratios", "slope"]
