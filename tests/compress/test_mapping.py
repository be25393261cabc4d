"""Feature mapping of 4.5.2 against hand-written tables."""

import pytest

from ditcompress.compress import CompressionError, CompressionRecord, LowRankSpec, feature_mapping

EIGHT = [str(i) for i in range(8)]


def _pairs(*pairs):
    """(teacher, student) id pairs from integers."""
    return [(str(t), str(s)) for t, s in pairs]


def test_a_removed_run_is_the_target_of_the_kept_block_before_it():
    # S_{l−(i+1)} vs T_l: student block 2 stands in for teacher blocks 2..5
    record = CompressionRecord("pixart", removed=["3", "4", "5"])
    assert feature_mapping(EIGHT, record) == _pairs((0, 0), (1, 1), (5, 2), (6, 6), (7, 7))


def test_every_kept_block_has_exactly_one_target():
    record = CompressionRecord("pixart", removed=["1", "3", "4", "7"])
    pairs = feature_mapping(EIGHT, record)
    assert pairs == _pairs((1, 0), (4, 2), (5, 5), (7, 6))
    assert [s for _, s in pairs] == [b for b in EIGHT if b not in record.removed]


def test_a_removed_tail_is_the_target_of_the_last_kept_block():
    record = CompressionRecord("pixart", removed=["6", "7"])
    assert feature_mapping(EIGHT, record) == _pairs((0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (7, 5))


def test_removed_leading_blocks_have_no_student_counterpart():
    # the first kept block reads the embedded input and still targets its own teacher output
    record = CompressionRecord("pixart", removed=["0", "1"])
    assert feature_mapping(EIGHT[:4], record) == _pairs((2, 2), (3, 3))
    record = CompressionRecord("pixart", removed=["0", "1", "3"])
    assert feature_mapping(EIGHT[:4], record) == _pairs((3, 2))


def test_no_removal_and_svd_only_students_map_one_to_one():
    assert feature_mapping(EIGHT, CompressionRecord("pixart")) == [(b, b) for b in EIGHT]
    svd = {"3.attn1.to_q": LowRankSpec(4, 16, 16), "5.ff.net.2": LowRankSpec(8, 16, 64)}
    record = CompressionRecord("pixart", svd=svd)
    for mode in ("last", "all"):
        assert feature_mapping(EIGHT, record, mode=mode) == [(b, b) for b in EIGHT]


def test_flux_mapping_runs_across_double_and_single_blocks():
    # execution order: double blocks, then single blocks
    ids = ["double.0", "double.1", "double.2", "single.0", "single.1", "single.2"]
    record = CompressionRecord("flux", removed=["double.1", "double.2", "single.0"])
    assert feature_mapping(ids, record) == [
        ("single.0", "double.0"), ("single.1", "single.1"), ("single.2", "single.2"),
    ]
    record = CompressionRecord("flux", removed=["single.1", "single.2"])
    assert feature_mapping(ids, record) == [
        ("double.0", "double.0"), ("double.1", "double.1"), ("double.2", "double.2"), ("single.2", "single.0"),
    ]


def test_all_mode_gives_a_kept_block_one_target_per_block_it_replaces():
    record = CompressionRecord("pixart", removed=["3", "4", "5"])
    assert feature_mapping(EIGHT, record, mode="all") == _pairs(
        (0, 0), (1, 1), (2, 2), (3, 2), (4, 2), (5, 2), (6, 6), (7, 7))
    record = CompressionRecord("pixart", removed=["0", "1"])
    assert feature_mapping(EIGHT[:4], record, mode="all") == _pairs((2, 2), (3, 3))


def test_bad_mode_or_unknown_removed_block_is_a_one_line_error():
    with pytest.raises(CompressionError, match=r"mode must be one of .*\(got 'first'\)"):
        feature_mapping(EIGHT, CompressionRecord("pixart"), mode="first")
    with pytest.raises(CompressionError, match=r"\['9'\] are not teacher blocks") as err:
        feature_mapping(EIGHT, CompressionRecord("pixart", removed=["9"]))
    assert "\n" not in str(err.value)
