"""Feature mapping of 4.5.2 against hand-written tables."""

from ditcompress.compress import CompressionRecord, feature_mapping

TEN = [str(i) for i in range(10)]


def test_removed_blocks_map_to_the_last_survivor_before_them():
    record = CompressionRecord("pixart", removed=["3", "4", "7"])
    assert feature_mapping(TEN, record) == [
        ("0", "0"), ("1", "1"), ("2", "2"), ("3", "2"), ("4", "2"),
        ("5", "5"), ("6", "6"), ("7", "6"), ("8", "8"), ("9", "9"),
    ]


def test_svd_students_map_one_to_one():
    from ditcompress.compress import LowRankSpec

    record = CompressionRecord("pixart", svd={"3.attn1.to_q": LowRankSpec(4, 16, 16)})
    assert feature_mapping(TEN, record) == [(i, i) for i in TEN]


def test_leading_removed_blocks_have_no_student_counterpart():
    record = CompressionRecord("pixart", removed=["0", "1"])
    assert feature_mapping(TEN[:4], record) == [("2", "2"), ("3", "3")]


def test_flux_mapping_runs_across_double_and_single_blocks():
    ids = ["double.0", "double.1", "single.0", "single.1"]
    record = CompressionRecord("flux", removed=["double.1", "single.0"])
    assert feature_mapping(ids, record) == [
        ("double.0", "double.0"), ("double.1", "double.0"), ("single.0", "double.0"), ("single.1", "single.1"),
    ]
