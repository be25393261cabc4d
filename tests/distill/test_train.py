"""The distillation loop on the session's tiny world: eq 4.10's terms, the local phase's frozen
weights, bit-identical resume, the NaN stop, and the stage's glue and bad inputs."""

import copy

import pytest
import torch

from ditcompress.compress import feature_mapping, remove_blocks, save_student, svd_compress
from ditcompress.compress.record import record_of
from ditcompress.distill.config import recipe_for
from ditcompress.distill.loss import KDObjective
from ditcompress.distill.train import Setup, TrainingDiverged, distill, local_blocks
from ditcompress.errors import UserError
from ditcompress.models import get_adapter
from ditcompress.params import ParamsError, parse_params
from ditcompress.zoo.teacher import TeacherData

from ..shrunk import params_with

RECIPE = {"batch_size": 4, "device": "cpu", "warmup_steps": 1, "log_every": 2, "checkpoint_every": 3,
          "ema_decay": 0.9}


def _teacher(root):
    adapter = get_adapter("pixart")
    return adapter, adapter.load_transformer(root / "models" / "shapes" / "pixart").requires_grad_(False)


def _setup(root, remove=("1",), mapping="last") -> Setup:
    adapter, teacher = _teacher(root)
    student, record = remove_blocks(teacher, list(remove))
    objective = adapter.objective({"num_train_timesteps": 1000, "prediction_type": "v_prediction",
                                   "beta_schedule": "squaredcos_cap_v2"})
    pairs = feature_mapping([r.id for r in adapter.blocks(teacher)], record, mode=mapping)
    return Setup(adapter, objective, teacher, student.requires_grad_(True), record, pairs)


def _data(n=12, seed=0) -> TeacherData:
    """Random latents and conditioning in the world teacher's shapes (the loop does not care what they show)."""
    g = torch.Generator().manual_seed(seed)
    from ditcompress.models.base import Conditioning

    cond = Conditioning(torch.randn(5, 16, 16, generator=g), torch.ones(5, 16, dtype=torch.long))
    empty = Conditioning(torch.randn(1, 16, 16, generator=g), torch.ones(1, 16, dtype=torch.long))
    return TeacherData(torch.randn(n, 4, 8, 8, generator=g), cond, torch.randint(5, (n,), generator=g), empty)


def _cfg(raw, **distill):
    return recipe_for(params_with(raw, distill={**RECIPE, **distill}).distill, "shapes-pixart")


def _batch(setup, seed=1):
    d = _data()
    g = torch.Generator().manual_seed(seed)
    x0, cond = d.batch(torch.arange(4), torch.zeros(4, dtype=torch.bool))
    return x0, cond, setup.objective.sample_t(4, generator=g), torch.randn(x0.shape, generator=g)


def test_the_kd_terms_vanish_when_the_student_is_the_teacher(world):
    root, _ = world
    setup = _setup(root, remove=())
    student = copy.deepcopy(setup.teacher)
    assert setup.pairs == [("0", "0"), ("1", "1")]
    for normalized in (False, True):
        kd = KDObjective(setup.adapter, setup.objective, setup.teacher, student, setup.pairs,
                         {"task": 1.0, "out": 1.0, "feat": 1.0}, normalized=normalized)
        _, terms = kd(*_batch(setup))
        assert terms["out"].item() == 0.0 and terms["feat"].item() == 0.0 and terms["task"].item() > 0


def test_the_kd_terms_are_their_formulas_and_reach_the_student(world):
    root, _ = world
    setup = _setup(root)  # block 1 removed: student block 0 mimics teacher block 1
    assert setup.pairs == [("1", "0")]
    x0, cond, t, noise = _batch(setup)
    xt = setup.objective.add_noise(x0, noise, t)
    with setup.adapter.capture_features(setup.teacher, ["1"]) as tf, torch.no_grad():
        t_out = setup.adapter.predict(setup.teacher, xt, t, cond)
        t_feat = tf["1"].flat()
    with setup.adapter.capture_features(setup.student, ["0"]) as sf:
        s_out = setup.adapter.predict(setup.student, xt, t, cond)
        s_feat = sf["0"].flat()
    target = setup.objective.target(x0, noise, t)
    kd = KDObjective(setup.adapter, setup.objective, setup.teacher, setup.student, setup.pairs,
                     {"task": 0.5, "out": 2.0, "feat": 3.0}, normalized=False)
    total, terms = kd(x0, cond, t, noise)
    task, out, feat = ((s_out - target) ** 2).mean(), ((s_out - t_out) ** 2).mean(), ((s_feat - t_feat) ** 2).mean()
    for got, want in ((terms["task"], task), (terms["out"], out), (terms["feat"], feat)):
        assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert total.item() == pytest.approx((0.5 * task + 2 * out + 3 * feat).item(), rel=1e-5)
    total.backward()
    block0 = setup.adapter.block_by_id(setup.student, "0").module
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block0.parameters())

    # normalised: each term is balanced to the task loss's scale, eq 4.13 with one layer gives
    # w = L_task / L_out per sample, so with ε = 0 the output term equals the task loss
    kd = KDObjective(setup.adapter, setup.objective, setup.teacher, setup.student, setup.pairs,
                     {"task": 1.0, "out": 1.0, "feat": 1.0}, normalized=True, eps=0.0)
    _, terms = kd(x0, cond, t, noise)
    assert terms["out"].item() == pytest.approx(terms["task"].item(), rel=1e-5)
    assert terms["feat"].item() == pytest.approx(terms["task"].item(), rel=1e-5)


def test_local_blocks_are_the_ones_before_each_gap_or_the_compressed_ones(world):
    root, _ = world
    assert local_blocks(_setup(root, remove=("1",))) == ["0"]
    assert local_blocks(_setup(root, remove=("0",))) == ["1"]  # a leading gap: the first kept block
    adapter, teacher = _teacher(root)
    student, record = svd_compress(teacher, ["1"], 0.5)
    setup = Setup(adapter, None, teacher, student, record, feature_mapping(["0", "1"], record))
    assert local_blocks(setup) == ["1"] and setup.pairs == [("0", "0"), ("1", "1")]


def test_the_local_phase_leaves_every_frozen_weight_bit_identical(world, tmp_path):
    root, raw = world
    setup = _setup(root)
    before = {k: v.clone() for k, v in setup.student.state_dict().items()}
    cfg = _cfg(raw, protocol="three_stage", steps={"local": 3, "global": 0, "domain": 0}, ema_decay=0.0)
    student = distill(setup, cfg, {"laion": _data()}, tmp_path / "ckpt")
    after = student.state_dict()
    trained = {k for k in before if k.startswith("transformer_blocks.0.")}
    assert trained and all(not torch.equal(before[k], after[k]) for k in trained
                           if k.endswith(".weight") and "norm" not in k)
    frozen = [k for k in before if k not in trained]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stop", [2, 5, 6])  # inside the local phase, inside the global one, at its end
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(world, tmp_path, stop, caplog):
    root, raw = world
    cfg = _cfg(raw, steps={"local": 2, "global": 4, "domain": 3}, optimizer="came", betas=[0.9, 0.999, 0.9999],
               eps=[1e-30, 1e-16])
    sets = {"laion": _data(seed=0), "domain": _data(seed=1)}
    whole = _state(distill(_setup(root), cfg, sets, tmp_path / "a"))
    distill(_setup(root), cfg, sets, tmp_path / "b", stop_after=stop)  # as killed right after step `stop`
    with caplog.at_level("INFO", logger="ditcompress.distill.train"):
        resumed = _state(distill(_setup(root), cfg, sets, tmp_path / "b"))
    assert f"resuming at step {stop} of 9" in caplog.text
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    # a checkpoint of other settings is not resumed: training starts over
    other = cfg.model_copy(update={"lr": cfg.lr * 2})
    assert not all(torch.equal(whole[k], v) for k, v in _state(distill(_setup(root), other, sets, tmp_path / "b")).items())


def test_a_nan_loss_stops_naming_the_step_and_term_and_keeps_the_last_checkpoint(world, tmp_path):
    root, raw = world
    cfg = _cfg(raw, steps={"local": 0, "global": 4, "domain": 0}, checkpoint_every=2)
    setup = _setup(root)
    calls = []

    def poison(module, args, output):  # the student's third forward (step 3) overflows
        calls.append(1)
        return output * float("nan") if len(calls) == 3 else output

    setup.adapter.block_by_id(setup.student, "0").module.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"^distill: step 3 \(global phase\): loss term task is nan; the last "
                                               r"good checkpoint \(step 2\) stays in .*ckpt$"):
        distill(setup, cfg, {"laion": _data()}, tmp_path / "ckpt")
    from ditcompress.distill.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "ckpt")["state"]["done"] == 2


def test_bad_distill_params_are_one_line_errors():
    cases = [({"loss": "kl"}, "distill.loss: unknown loss 'kl' (known: out, standard, hybrid, normalized, "
                              "normalized_hybrid)"),
             ({"protocol": "one_stage"}, "distill.protocol: unknown protocol 'one_stage'"),
             ({"steps": {"global": -1}}, "distill.steps: global: phase steps must be >= 0 (got -1)"),
             ({"steps": {"warmup": 1}}, "distill.steps: unknown phase 'warmup'"),
             ({"weights": {"task": 0, "out": 0, "feat": 0}}, "every λ is zero, nothing to learn"),
             ({"loss": "out", "weights": {"out": 0}}, "every λ is zero, nothing to learn"),
             ({"weights": {"kl": 1}}, "distill.weights: unknown loss term 'kl'")]
    for bad, message in cases:
        with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_params({"distill": bad})
    with pytest.raises(UserError, match=r"^distill: came takes 3 betas and 2 eps"):
        recipe_for(parse_params({"distill": {"optimizer": "came"}}).distill, "shapes-pixart")


def test_named_losses_and_weights():
    named = {n: recipe_for(parse_params({"distill": {"loss": n}}).distill, "shapes-pixart") for n in
             ("out", "standard", "hybrid", "normalized", "normalized_hybrid")}
    assert named["out"].lambdas() == {"task": 0.0, "out": 1.0, "feat": 0.0} and not named["out"].normalized
    assert named["hybrid"].lambdas() == {"task": 1.0, "out": 1.0, "feat": 1.0} and not named["hybrid"].normalized
    assert named["normalized"].lambdas() == {"task": 0.0, "out": 1.0, "feat": 1.0} and named["normalized"].normalized
    cfg = parse_params({"distill": {"weights": {"task": 0.25}}}).distill
    assert cfg.lambdas() == {"task": 0.25, "out": 1.0, "feat": 1.0}
    # the real presets take thesis tab. 5.1; a key set in params.yaml wins, steps merge per phase
    real = recipe_for(parse_params({"distill": {"steps": {"domain": 5}}}).distill, "pixart-sigma")
    assert (real.optimizer, real.lr, real.batch_size, real.betas, real.eps) == (
        "came", 2e-5, 16, (0.9, 0.999, 0.9999), (1e-30, 1e-16))
    assert real.steps == {"local": 38_000, "global": 38_000, "domain": 5}


def test_the_stage_distils_the_compressed_student_and_refuses_another_teachers(world, teacher_set, monkeypatch):
    from ditcompress.compress.student import load_student
    from ditcompress.distill.stage import run_distill

    root, raw = world
    monkeypatch.chdir(root)
    adapter, teacher = _teacher(root)
    student, record = remove_blocks(teacher, ["1"])
    record.teacher = "models/shapes/pixart/transformer"
    save_student(student, "students/kd_in", record)
    distill = {**RECIPE, "student": "students/kd_in", "steps": {"local": 1, "global": 2, "domain": 1},
               "sample_prompts": 2, **teacher_set}
    summary = run_distill(params_with(raw, distill=distill), "students/kd_out", "data/distill_t", plots_dir="plots_t")
    out = load_student(root / "students" / "kd_out")
    assert record_of(out).removed == ["1"] and summary["steps"] == 4
    assert set(summary) == {"steps", "seconds", "feature_pairs"}  # the size is compress.json's
    assert sum(p.numel() for p in out.parameters()) == sum(p.numel() for p in student.parameters())
    assert (root / "plots_t" / "samples.png").is_file()
    assert {p.name for p in (root / "data" / "distill_t" / "cache").iterdir()} == {
        "laion.safetensors", "laion.json", "domain.safetensors", "domain.json"}
    assert not any((root / "checkpoints" / "distill").iterdir())  # a finished run leaves no checkpoint

    # killed after its third step, the stage resumes from its checkpoint folder
    run_distill(params_with(raw, distill=distill), "students/kd_out2", "data/distill_t", stop_after=3)
    assert len(list((root / "checkpoints" / "distill").iterdir())) == 1
    run_distill(params_with(raw, distill=distill), "students/kd_out2", "data/distill_t")
    assert not any((root / "checkpoints" / "distill").iterdir())
    again = load_student(root / "students" / "kd_out2").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in out.state_dict().items())

    record.teacher = "models/elsewhere/transformer"
    save_student(student, "students/kd_other", record)
    with pytest.raises(UserError, match=r"^distill.student: students/kd_other was compressed from "
                                        r"'models/elsewhere/transformer', not from the teacher 'models/shapes/pixart'"):
        run_distill(params_with(raw, distill={**distill, "student": "students/kd_other"}), "students/x", "data/x")
    with pytest.raises(UserError, match=r"^distill.student: students/none: student directory not found"):
        run_distill(params_with(raw, distill={**distill, "student": "students/none"}), "students/x", "data/x")


def test_gradient_checkpointing_trains_the_same_weights(world, tmp_path):
    root, raw = world
    cfg = _cfg(raw, steps={"local": 0, "global": 2, "domain": 0}, ema_decay=0.0)
    plain = _state(distill(_setup(root), cfg, {"laion": _data()}, tmp_path / "a"))
    setup = _setup(root)
    checkpointed = _state(distill(setup, cfg.model_copy(update={"gradient_checkpointing": True}),
                                  {"laion": _data()}, tmp_path / "b"))
    assert setup.student.gradient_checkpointing  # diffusers' flag, set by the loop
    assert all(torch.equal(plain[k], checkpointed[k]) for k in plain)
