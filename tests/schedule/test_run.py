"""The schedule loop on the session's tiny world (a 2-block PixArt teacher): rounds, resume after a
kill between and inside rounds, the linear ratios it applies, the stops, and bad inputs."""

import json

import pytest
import torch

from ditcompress.compress.lowrank import LowRankLinear
from ditcompress.compress.record import record_of
from ditcompress.compress.student import load_student
from ditcompress.models import get_adapter
from ditcompress.params import ParamsError
from ditcompress.schedule import ScheduleError, linear_ratios
from ditcompress.schedule.run import apply_plan, compressible, RoundPlan, run_schedule

from ..shrunk import params_with

STEPS = {"local": 1, "global": 2, "domain": 1}
DISTILL = {"batch_size": 4, "device": "cpu", "warmup_steps": 1, "log_every": 2, "checkpoint_every": 1,
           "ema_decay": 0.9, "sample_prompts": 0}
SCORE = {"prompts": 4, "batch_size": 4, "device": "cpu"}


def _params(raw, teacher_set, **schedule):
    return params_with(raw, distill={**DISTILL, **teacher_set}, score=SCORE,
                       schedule={"steps": STEPS, "evaluate": False, **schedule})


def _teacher(root):
    return get_adapter("pixart").load_transformer(root / "models" / "shapes" / "pixart")


def _total(root) -> int:
    return sum(p.numel() for p in _teacher(root).parameters())


def _svd_two_rounds_target(root, c: float) -> float:
    """A target that SVD at ratio c reaches only once both blocks are compressed."""
    sizes = compressible(_teacher(root))
    return 1 - c * (sum(sizes.values()) - 0.5 * min(sizes.values())) / _total(root)


def _state(directory):
    return load_student(directory).state_dict()


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_progressive_svd_rounds_resume_after_a_kill_between_and_inside_rounds(world, teacher_set, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    target = _svd_two_rounds_target(root, 0.5)
    params = _params(raw, teacher_set, kind="progressive", method="svd", c_fixed=0.5, target=target,
                     checkpoint_dir="ckpt/a")
    summary = run_schedule(params, "out/a", "data/sched_a", plots_dir="plots/a")
    rows = json.loads((root / "out" / "a" / "rounds.json").read_text())
    assert summary["rounds"] == 2 and [r["round"] for r in rows] == [0, 1, 2]
    # each round compresses one block by c_fixed, the second the block left dense
    assert sorted(b for r in rows[1:] for b in r["blocks"]) == ["0", "1"]
    assert all(r["ratios"] == {r["blocks"][0]: 0.5} for r in rows[1:])
    final = load_student(root / "out" / "a" / "round-2")
    assert sorted({k.split(".")[0] for k in record_of(final).svd}) == ["0", "1"]
    assert summary["params"] == sum(p.numel() for p in final.parameters())
    assert summary["kept_fraction"] == pytest.approx(summary["params"] / _total(root), rel=1e-12)
    assert summary["kept_fraction"] <= target < rows[1]["kept_fraction"]
    assert summary["steps"] == 2 * sum(STEPS.values())
    assert {p.name for p in (root / "plots" / "a").iterdir()} >= {"quality.png", "blocks.png", "rounds.json"}
    assert not any((root / "ckpt" / "a").iterdir())  # a finished schedule leaves no work folder

    # killed once round 1 is done, then inside round 2 after two distillation steps
    run_schedule(params, "out/b", "data/sched_a", stop=(1, None))
    run_schedule(params, "out/b", "data/sched_a", stop=(2, 2))
    (work,) = (root / "ckpt" / "a").iterdir()
    assert json.loads((work / "state.json").read_text())["pending"]["round"] == 2
    run_schedule(params, "out/b", "data/sched_a")
    for k in (1, 2):
        assert _same(_state(root / "out" / "a" / f"round-{k}"), _state(root / "out" / "b" / f"round-{k}"))


def test_a_threshold_never_reached_stops_at_the_target_and_says_so(world, teacher_set, monkeypatch, caplog):
    root, raw = world
    monkeypatch.chdir(root)
    sizes = [sum(p.numel() for p in b.parameters()) for b in _teacher(root).transformer_blocks]
    target = 1 - 0.5 * min(sizes) / _total(root)  # removing either block reaches it
    params = _params(raw, teacher_set, kind="progressive", blocks_per_round=None, cmmd_threshold=1e9,
                     target=target, checkpoint_dir="ckpt/t")
    with caplog.at_level("INFO", logger="ditcompress.schedule.run"):
        summary = run_schedule(params, "out/t", "data/sched_a")
    rows = json.loads((root / "out" / "t" / "rounds.json").read_text())
    assert summary["rounds"] == 1 and rows[1]["stopped"] == "target" and len(rows[1]["blocks"]) == 1
    assert "before CMMD reached schedule.cmmd_threshold=1e+09; the schedule stops at the target" in caplog.text


def test_one_shot_selects_once_and_trains_the_rounds_it_replaces(world, teacher_set, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    target = _svd_two_rounds_target(root, 0.5)
    params = _params(raw, teacher_set, kind="one_shot", method="svd", c_fixed=0.5, target=target,
                     checkpoint_dir="ckpt/o")
    summary = run_schedule(params, "out/o", "data/sched_a")
    rows = json.loads((root / "out" / "o" / "rounds.json").read_text())
    assert summary["rounds"] == 1 and sorted(rows[1]["blocks"]) == ["0", "1"]
    assert summary["steps"] == 2 * sum(STEPS.values())  # two blocks, one per progressive round


def test_linear_progressive_applies_the_eq_4_16_ratios(world, teacher_set, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    total = _total(root)
    sizes = compressible(_teacher(root))
    s, n = 0.6, 0.8 * 0.6 * sum(sizes.values()) / total  # inside eq 4.21 for k = 2 whatever the order
    params = _params(raw, teacher_set, kind="linear_progressive", target=1 - 0.999 * n,
                     linear={"base_ratio": s, "remove": n, "blocks": 2}, checkpoint_dir="ckpt/l")
    summary = run_schedule(params, "out/l", "data/sched_a")
    assert summary["rounds"] == 1
    row = json.loads((root / "out" / "l" / "rounds.json").read_text())[1]
    detail = row["detail"]
    ranked = detail["ranked"]
    # the ranking is eq 4.15 of the probed CMMDs, the ratios eq 4.16/4.19 on the sizes in that order
    assert ranked == sorted(ranked, key=lambda b: detail["cmmd"][b] / (sizes[b] * 0.6))
    # the target is 0.999·N away: this last round removes only that
    want = linear_ratios([sizes[b] for b in ranked], s, 0.999 * n * total)
    assert detail["N"] == pytest.approx(0.999 * n * total, rel=1e-12) and row["stopped"] == "k=2"
    assert [row["ratios"][b] for b in ranked] == pytest.approx(want, rel=1e-12)
    # eq 4.9 rounds each layer's rank down: c·P ≤ removed < c·P + Σ(n + m) over the block's linears
    student = load_student(root / "out" / "l" / "round-1")
    after = compressible(student)
    teacher = _teacher(root)
    for b, c in row["ratios"].items():
        slack = sum(layer.in_features + layer.out_features
                    for name, layer in teacher.transformer_blocks[int(b)].named_modules()
                    if isinstance(layer, torch.nn.Linear) and f"{b}.{name}" in record_of(student).svd)
        removed = sizes[b] - after[b]
        assert c * sizes[b] <= removed < c * sizes[b] + slack


def test_a_trained_factor_pair_is_compressed_again_by_the_svd_of_its_product(world):
    root, _ = world
    teacher = _teacher(root)
    first, _ = apply_plan(teacher, RoundPlan(["0"], {"0": 0.3}, "svd"))
    layer = first.transformer_blocks[0].ff.net[2]
    assert isinstance(layer, LowRankLinear)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # retraining moved A_t, B_t away from the first factorisation
        layer.A.add_(0.05 * torch.randn(layer.A.shape, generator=g))
        layer.B.add_(0.05 * torch.randn(layer.B.shape, generator=g))
    w = (layer.A @ layer.B).double()
    second, _ = apply_plan(first, RoundPlan(["0"], {"0": 0.5}, "svd"))
    again = second.transformer_blocks[0].ff.net[2]
    u, sv, vh = torch.linalg.svd(w, full_matrices=False)
    r = again.rank
    truncated = (u[:, :r] * sv[:r]) @ vh[:r]
    assert r < layer.rank
    got = (again.A @ again.B).double()
    assert torch.linalg.norm(got - truncated) <= 1e-5 * torch.linalg.norm(truncated)


@pytest.mark.parametrize(("schedule", "message"), [
    ({"target": 1.0}, r"^params.yaml: schedule.target: must be < 1.0 \(got 1.0\)$"),
    ({"target": 0.0}, r"^params.yaml: schedule.target: must be > 0.0 \(got 0.0\)$"),
    ({"linear": {"base_ratio": 1.0}}, r"^params.yaml: schedule.linear.base_ratio: must be < 1.0 \(got 1.0\)$"),
    ({"linear": {"base_ratio": 0.0}}, r"^params.yaml: schedule.linear.base_ratio: must be > 0.0 \(got 0.0\)$"),
    ({"linear": {"remove": 1.5}}, r"^params.yaml: schedule.linear.remove: must be < 1.0 \(got 1.5\)$"),
    ({"kind": "sometimes"}, r"^params.yaml: schedule.kind: unknown schedule kind 'sometimes'"),
    ({"blocks_per_round": None}, r"^params.yaml: schedule: .*a round needs a stop: blocks_per_round or cmmd_threshold"),
])
def test_bad_params_are_one_line_errors(world, teacher_set, schedule, message):
    _, raw = world
    with pytest.raises(ParamsError, match=message) as err:
        _params(raw, teacher_set, **schedule)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("schedule", "message"), [
    ({"kind": "progressive", "target": 0.01},
     r"^schedule.target=0.01: progressive would remove every block \(removing all but the smallest of the 2 "
     r"blocks keeps \d+\.\d% of the teacher\)$"),
    ({"kind": "one_shot", "method": "svd", "c_fixed": 0.2, "target": 0.5},
     r"^schedule.target=0.5: one_shot SVD at c_fixed=0.2 compresses each block once; compressing every block "
     r"keeps \d+\.\d% of the teacher$"),
    ({"kind": "linear_progressive", "linear": {"remove": 0.99}},
     r"^schedule.linear.remove=0.99: N=\d+ parameters per round is more than the \d+ the blocks' attention and "
     r"MLP linears hold$"),
    ({"kind": "linear_progressive", "target": 0.01},
     r"^schedule.target=0.01: linear progressive SVD would have to remove every block's attention and MLP weights"),
])
def test_unreachable_schedules_stop_before_any_work(world, teacher_set, monkeypatch, schedule, message):
    root, raw = world
    monkeypatch.chdir(root)
    params = _params(raw, teacher_set, checkpoint_dir="ckpt/bad", **schedule)
    with pytest.raises(ScheduleError, match=message):
        run_schedule(params, "out/bad", "data/sched_bad")
    assert not (root / "ckpt" / "bad").exists() and not (root / "data" / "sched_bad").exists()


def test_later_rounds_refit_k_within_eq_4_21_and_the_first_does_not(world, teacher_set, monkeypatch):
    from ditcompress.schedule.run import _refit

    p = [100, 100, 100, 100]
    # N = 30 at S = 0.5: k = 4 needs N ≥ 100, k = 2 needs 50, so only one block fits: c_1 = N / P_1
    assert _refit(p, 0.5, 30, 4, ScheduleError("x")) == (1, [0.3])
    k, c = _refit(p, 0.5, 120, 2, ScheduleError("x"))  # k = 2 allows at most 100: the nearest k' is 3
    assert k == 3 and c == pytest.approx(linear_ratios(p[:3], 0.5, 120), rel=1e-12)
    with pytest.raises(ScheduleError, match="^x$"):
        _refit(p, 0.5, 250, 2, ScheduleError("x"))  # more than S·ΣP of every block

    root, raw = world
    monkeypatch.chdir(root)
    sizes = compressible(_teacher(root))
    n = 0.2 * sum(sizes.values()) / _total(root)  # > S·ΣP at S = 0.1: the upper bound, in round 1
    params = _params(raw, teacher_set, kind="linear_progressive", target=0.5, checkpoint_dir="ckpt/u",
                     linear={"base_ratio": 0.1, "remove": n, "blocks": 2})
    with pytest.raises(ScheduleError, match=r"^schedule.linear: linear ratios: N=\d+(\.\d+)? > S·ΣP = \d+(\.\d+)? "
                                            r"for S=0.1, k=2 \(eq 4.21 upper bound.*\(blocks \d, \d\)$"):
        run_schedule(params, "out/u", "data/sched_a")
    (work,) = (root / "ckpt" / "u").iterdir()
    assert not (work / "round-1").exists()  # ranked, nothing compressed
