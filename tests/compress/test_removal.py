"""Block removal (eq 4.6): values of the student equal the teacher with the block skipped."""

import pytest
import torch

from ditcompress.compress import CompressionError, remove_blocks


def _identity_block(kind):
    """A forward that returns the block's inputs, in the block's own output layout."""
    if kind == "pixart":
        return lambda hidden_states, *a, **k: hidden_states
    # Flux double and single blocks both return (encoder_hidden_states, hidden_states)
    return lambda hidden_states, encoder_hidden_states, *a, **k: (encoder_hidden_states, hidden_states)


def _predict(adapter, model, inputs):
    latents, t, cond = inputs
    with torch.no_grad():
        return adapter.predict(model, latents, t, cond)


def test_removing_no_block_is_bit_identical(adapter, model, inputs):
    student, record = remove_blocks(model, [])
    assert student is not model and record.removed == []
    assert torch.equal(_predict(adapter, student, inputs), _predict(adapter, model, inputs))


@pytest.mark.parametrize("which", [0, 1, -1])
def test_removing_a_block_equals_skipping_it_in_the_teacher(adapter, model, inputs, which):
    refs = adapter.blocks(model)
    victim = refs[which]
    student, record = remove_blocks(model, [victim.id])
    before = _predict(adapter, model, inputs)
    victim.module.forward = _identity_block(victim.kind)
    skipped = _predict(adapter, model, inputs)
    assert not torch.equal(before, skipped)  # the block did something
    assert torch.equal(_predict(adapter, student, inputs), skipped)
    assert record.removed == [victim.id]


def test_flux_removal_of_both_kinds_keeps_config_in_sync():
    from ditcompress.models import get_adapter
    from ditcompress.models.tiny import tiny_inputs, tiny_transformer

    adapter, model = get_adapter("flux"), tiny_transformer("flux-dev", num_layers=3, num_single_layers=3)
    student, record = remove_blocks(model, ["single.1", "double.0"])
    assert (student.config.num_layers, student.config.num_single_layers) == (2, 2)
    assert (model.config.num_layers, model.config.num_single_layers) == (3, 3)  # teacher untouched
    assert record.removed == ["double.0", "single.1"]  # execution order
    assert [b.id for b in adapter.blocks(student)] == ["double.1", "double.2", "single.0", "single.2"]
    for ref in adapter.blocks(model):
        if ref.id in record.removed:
            ref.module.forward = _identity_block(ref.kind)
    inputs = tiny_inputs("flux")
    assert torch.equal(_predict(adapter, student, inputs), _predict(adapter, model, inputs))


def test_ids_stay_teacher_ids_across_rounds(adapter, model):
    ids = [b.id for b in adapter.blocks(model)]
    s1, _ = remove_blocks(model, [ids[1]])
    s2, record = remove_blocks(s1, [ids[3]])
    assert [b.id for b in adapter.blocks(s2)] == [ids[0], ids[2]]
    assert record.removed == [ids[1], ids[3]] and [s["op"] for s in record.steps] == ["remove", "remove"]
    with pytest.raises(CompressionError, match=repr(ids[1])):
        remove_blocks(s2, [ids[1]])  # already gone


def test_removal_errors_name_the_value(adapter, model):
    with pytest.raises(CompressionError, match="unknown block id '99'") as err:
        remove_blocks(model, ["99"])
    assert "\n" not in str(err.value)
    with pytest.raises(CompressionError, match="every block"):
        remove_blocks(model, [b.id for b in adapter.blocks(model)])
