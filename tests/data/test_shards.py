"""The sharding engine: id rules, per-item seeds, plans split over processes, atomic files, resume checks."""

import hashlib
import io
import tarfile

import pytest

from ditcompress.data.shards import (
    LocalProcess, ShardedRun, add_member, atomic_write, check_id, plan_shards, read_range, seed_for, split_member,
    tar_index,
)
from ditcompress.errors import UserError


def test_check_id_accepts_webdataset_keys_only():
    assert check_id("000123") is None
    assert check_id("laion/part-7/000123") is None
    for bad, why in [("", "empty"), (None, "empty"), (" a", "whitespace"), ("a/../b", "'..'"), ("a.b", "'.'"),
                     ("dir.x/a", None), ("a//b", "empty")]:
        assert (check_id(bad) is None) == (why is None), bad
        if why:
            assert why in check_id(bad)


def test_seed_for_is_a_pure_function_of_seed_and_key():
    expected = int.from_bytes(hashlib.sha256(b"3/img_07").digest()[:8], "big") >> 1
    assert seed_for(3, "img_07") == expected
    assert 0 <= expected < 2**63
    assert seed_for(3, "img_07") != seed_for(4, "img_07") != seed_for(3, "img_08")


def test_plan_shards_cuts_in_order():
    shards = plan_shards([f"i{k}" for k in range(7)], 3)
    assert [s.ids for s in shards] == [("i0", "i1", "i2"), ("i3", "i4", "i5"), ("i6",)]
    assert [s.stem for s in shards] == ["shard-00000", "shard-00001", "shard-00002"]


def _run(tmp_path, process, settings=None, ids=None):
    ids = ids or [f"i{k}" for k in range(10)]
    return ShardedRun(tmp_path / "out", "test", settings or {"steps": 20}, plan_shards(ids, 2), ".txt",
                      f"digest-{len(ids)}", process)


def _write(run, shard):
    with atomic_write(run.path(shard)) as f:
        f.write(" ".join(shard.ids).encode())


def test_processes_split_pending_shards_and_resume_skips_complete_ones(tmp_path):
    # two processes (in turn, no process group): all start before anyone writes, as at the barrier
    runs = [_run(tmp_path, LocalProcess(rank, 2)) for rank in (0, 1)]
    mine = [run.start() for run in runs]
    assert [s.index for s in mine[0]] == [0, 2, 4] and [s.index for s in mine[1]] == [1, 3]
    for run, shards in zip(runs, mine):
        for shard in shards:
            _write(run, shard)
    assert runs[1].finish() is None
    manifest = runs[0].finish()
    assert manifest["complete"] and manifest["complete_items"] == 10 and manifest["new_items"] == 10

    # a lost shard is the only work of the next run, and the manifest counts it as new
    run.path(run.shards[3]).unlink()
    rerun = _run(tmp_path, LocalProcess())
    assert [s.index for s in rerun.start()] == [3]
    _write(rerun, rerun.shards[3])
    manifest = rerun.finish()
    assert manifest["complete"] and manifest["new_items"] == 2
    assert manifest["shards"] == [f"shard-{k:05d}.txt" for k in range(5)]


def test_resume_with_other_settings_or_inputs_is_an_error(tmp_path):
    run = _run(tmp_path, LocalProcess())
    _write(run, run.start()[0])
    with pytest.raises(UserError, match=r"different settings \(steps: 20 -> 50\)"):
        _run(tmp_path, LocalProcess(), settings={"steps": 50}).start()
    with pytest.raises(UserError, match=r"different inputs \(10 -> 12 items"):
        _run(tmp_path, LocalProcess(), ids=[f"i{k}" for k in range(12)]).start()


def test_shards_without_a_plan_are_an_error(tmp_path):
    (tmp_path / "out" / "shards").mkdir(parents=True)
    (tmp_path / "out" / "shards" / "shard-00000.txt").write_text("x")
    with pytest.raises(UserError, match="no plan.json"):
        _run(tmp_path, LocalProcess()).start()


def test_atomic_write_publishes_only_complete_files(tmp_path):
    target = tmp_path / "a.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_tar_members_are_deterministic_and_indexed(tmp_path):
    def tar_bytes():
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            add_member(tar, "dir/k1.json", b'{"a": 1}')
            add_member(tar, "dir/k1.png", b"PNGDATA")
            add_member(tar, "k2.seg.png", b"SEG")
        return buf.getvalue()

    assert tar_bytes() == tar_bytes()
    path = tmp_path / "x.tar"
    path.write_bytes(tar_bytes())
    index = tar_index(path)
    assert sorted(index) == ["dir/k1", "k2"] and sorted(index["k2"]) == ["seg.png"]
    assert read_range(path, *index["dir/k1"]["png"]) == b"PNGDATA"
    assert split_member("a/b.c.d") == ("a/b", "c.d")
