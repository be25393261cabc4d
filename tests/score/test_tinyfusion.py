"""TinyFusion learnable masks: an identity block is learned away, groups, isolation, errors, seeds."""

import pytest
import torch

from ditcompress.errors import UserError
from ditcompress.models import get_adapter
from ditcompress.models.tiny import tiny_inputs, tiny_transformer
from ditcompress.score import tinyfusion
from ditcompress.score.tinyfusion import learn_masks

PIXART_SCHEDULER = {  # PixArt-Σ's scheduler training keys
    "_class_name": "DPMSolverMultistepScheduler", "beta_end": 0.02, "beta_schedule": "linear",
    "beta_start": 0.0001, "num_train_timesteps": 1000, "prediction_type": "epsilon",
}


def _objective(adapter):
    return adapter.objective(PIXART_SCHEDULER if adapter.name == "pixart" else {})


def _batches(family, n=4):
    """`n` seeded `(latents, cond)` batches of two samples."""
    return [(latents, cond) for latents, _, cond in (tiny_inputs(family, 2, seed=s) for s in range(n))]


def _make_identity(ref):
    """Zero every projection that writes into the residual stream, so the block returns its input."""
    m = ref.module
    if ref.kind == "pixart":
        layers = [m.attn1.to_out[0], m.attn2.to_out[0], m.ff.net[2]]
    elif ref.kind == "double":
        layers = [m.attn.to_out[0], m.attn.to_add_out, m.ff.net[2], m.ff_context.net[2]]
    else:
        layers = [m.proj_out]
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()


def _assert_identity(adapter, model, block_id, inputs):
    """The block's output equals its input, bit for bit, on every stream of a real forward."""
    seen = []
    with torch.no_grad(), adapter.hook_blocks(model, [block_id], lambda b, i, o: seen.append((i, o))):
        adapter.predict(model, *inputs)
    (inp, out), = seen
    torch.testing.assert_close(out.image, inp.image, rtol=0, atol=0)
    if out.text is not None:
        torch.testing.assert_close(out.text, inp.text, rtol=0, atol=0)


def _dropping(group, block_id):
    """Index of the group's candidate mask that drops exactly `block_id`."""
    return next(i for i, kept in enumerate(group["masks"]) if set(group["blocks"]) - set(kept) == {block_id})


def test_an_identity_block_is_the_one_learned_away(family, adapter, model, inputs):
    # block 2 of 4 (Flux: the first single block), so neither end of the model is the answer
    victim = adapter.blocks(model)[2]
    _make_identity(victim)
    _assert_identity(adapter, model, victim.id, inputs)
    result = learn_masks(model, _objective(adapter), _batches(family), remove=1, steps=30, lora_rank=4,
                         loss="distill", teacher=model, seed=0, bar=False)
    group, = result.groups
    assert result.removed == [victim.id]
    assert len(group["masks"]) == 4 and group["best"] == _dropping(group, victim.id)
    probs = group["probabilities"]
    assert max(probs) == probs[group["best"]] and abs(sum(probs) - 1) < 1e-5


def test_groups_drop_one_block_each_and_enumerate_their_masks():
    adapter, model = get_adapter("pixart"), tiny_transformer("pixart-sigma")
    _make_identity(adapter.blocks(model)[1])
    logged = []
    result = learn_masks(model, _objective(adapter), _batches("pixart"), remove=2, group_size=2, steps=30,
                         lora_rank=4, loss="distill", teacher=model, seed=0, bar=False,
                         on_step=lambda step, metrics: logged.append((step, metrics)))
    assert [g["blocks"] for g in result.groups] == [["0", "1"], ["2", "3"]]
    assert [g["masks"] for g in result.groups] == [[["0"], ["1"]], [["2"], ["3"]]]  # C(2, 1) kept sets
    assert result.groups[0]["best"] == 0 and result.removed[0] == "1"  # group 0 drops its identity block
    assert len(result.removed) == 2 and result.removed[1] in ("2", "3")
    # history and the tracker callback: one row per step, tau annealed linearly from first to last
    assert [h["step"] for h in result.history] == list(range(30)) == [s for s, _ in logged]
    assert result.history[0]["tau"] == 4.0 and result.history[-1]["tau"] == pytest.approx(0.1)
    assert all(len(h["max_probability"]) == 2 for h in result.history)
    assert set(logged[-1][1]) == {"loss", "tau", "max_probability_0", "max_probability_1"}
    assert all(isinstance(v, float) for v in logged[-1][1].values())


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_the_callers_model_and_rng_are_untouched(family, adapter, model, lora_rank):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.requires_grad for k, p in model.named_parameters()}
    rng = torch.random.get_rng_state()
    learn_masks(model, _objective(adapter), _batches(family, 2), remove=1, steps=3, lora_rank=lora_rank,
                lr=1e-1, seed=0, bar=False)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert {k: p.requires_grad for k, p in model.named_parameters()} == grads
    assert all(not b.module._forward_hooks for b in adapter.blocks(model))
    assert torch.equal(torch.random.get_rng_state(), rng)


@pytest.mark.parametrize("kwargs, key", [
    (dict(remove=4), "score.selection.k"),
    (dict(remove=0), "score.selection.k"),
    (dict(remove=1, group_size=3), "score.selection.tinyfusion.group_size"),
    (dict(remove=1, group_size=8), "score.selection.tinyfusion.group_size"),
    (dict(remove=1, group_size=1), "score.selection.tinyfusion.group_size"),
    (dict(remove=1, group_size=2), "score.selection.k"),  # 2 groups cannot share 1 block
    (dict(remove=1, loss="distill"), "score.selection.tinyfusion.loss"),  # no teacher
    (dict(remove=1, loss="kl"), "score.selection.tinyfusion.loss"),
    (dict(remove=1, lora_rank=-1), "score.selection.tinyfusion.lora_rank"),
    (dict(remove=1, tau=(1.0, 0.0)), "score.selection.tinyfusion.tau"),
    (dict(remove=1, steps=0), "score.selection.tinyfusion.steps"),
])
def test_bad_settings_are_one_line_user_errors(kwargs, key):
    adapter, model = get_adapter("pixart"), tiny_transformer("pixart-sigma")
    with pytest.raises(UserError) as err:
        learn_masks(model, _objective(adapter), _batches("pixart", 1), bar=False, **kwargs)
    assert str(err.value).startswith(f"{key}:") and "\n" not in str(err.value)


def test_the_stage_can_check_groups_without_a_model():
    assert tinyfusion.check_groups(57, 3, None) == 1 and tinyfusion.check_groups(28, 4, 7) == 4
    with pytest.raises(UserError, match=r"^score\.selection\.k: 3 blocks .* 4 groups of 7"):
        tinyfusion.check_groups(28, 3, 7)


def test_too_many_candidate_masks_ask_for_groups(monkeypatch):
    monkeypatch.setattr(tinyfusion, "MAX_CANDIDATES", 3)  # one group of 4 dropping 1 has 4 candidates
    adapter, model = get_adapter("pixart"), tiny_transformer("pixart-sigma")
    with pytest.raises(UserError, match=r"^score\.selection\.tinyfusion\.group_size: .*4 candidate masks"):
        learn_masks(model, _objective(adapter), _batches("pixart", 1), remove=1, bar=False)


def test_batches_cycle_and_a_spent_iterator_is_an_error():
    adapter, model = get_adapter("pixart"), tiny_transformer("pixart-sigma")
    result = learn_masks(model, _objective(adapter), _batches("pixart", 1), remove=1, steps=3, bar=False)
    assert len(result.history) == 3  # one batch, reused
    with pytest.raises(ValueError, match="ran out of batches"):
        learn_masks(model, _objective(adapter), iter(_batches("pixart", 2)), remove=1, steps=3, bar=False)


@pytest.mark.parametrize("loss", ["task", "distill"])
def test_the_same_seed_gives_the_same_masks(loss):
    adapter, model = get_adapter("pixart"), tiny_transformer("pixart-sigma")
    run = lambda seed: learn_masks(model, _objective(adapter), _batches("pixart", 2), remove=2, steps=5,  # noqa: E731
                                   loss=loss, teacher=model, seed=seed, bar=False)
    a, b, c = run(0), run(0), run(1)
    assert a.groups[0]["probabilities"] == b.groups[0]["probabilities"]
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.groups[0]["probabilities"] != c.groups[0]["probabilities"]
