"""The compress stage's operators beyond removal on the session's tiny world: explicit ranks (5.1.6),
the 5.1.7 ratio presets, iterated SVD of a saved student (4.4.3), GRASP on generated images
(4.4.4), and the bad inputs each is a one-line error before anything is written."""

import json

import pytest
import torch

from ditcompress.compress import (
    CompressionError, LowRankLinear, grasp_scores, load_student, save_student, svd_compress, target_rank,
)
from ditcompress.compress.config import RATIO_PRESETS, CompressConfig
from ditcompress.compress.lowrank import layer_svd
from ditcompress.compress.stage import grasp_calibration, grasp_times, run_compress, same_teacher
from ditcompress.compress.svd import Rank, plan, ratio_spec
from ditcompress.data.config import for_preset
from ditcompress.errors import UserError
from ditcompress.models import get_adapter
from ditcompress.models.presets import get_preset
from ditcompress.params import ParamsError, parse_params
from ditcompress.sampling import Renderer

from ..shrunk import params_with
from .test_stage import SCORE

MLP = ("ff.net.0.proj", "ff.net.2")  # PixArt's MLP linears, 64×16 and 16×64 in the world's teacher


def _params(raw, **compress):
    return params_with(raw, score=SCORE, compress=compress)


def _teacher(root):
    return get_adapter("pixart").load_transformer(root / "models" / "shapes" / "pixart")


def _low_rank(model) -> dict[str, LowRankLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LowRankLinear)}


def _truncated(weight: torch.Tensor, k: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return u[:, :k] @ torch.diag(s[:k]) @ vh[:k]


@pytest.fixture(scope="module")
def generated(teacher_set):
    """8 teacher images of the world (the session's caption + generate stages' outputs)."""
    return teacher_set["domain"]


def test_ranks_give_factors_of_the_asked_ranks_and_replace_the_ratio_there(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    run_compress(_params(raw, method="svd", blocks=["0"], ratio=0.5, ranks={"mlp": 4, "cross_attn": 2}),
                 "students/ranks")
    student = load_student(root / "students" / "ranks")
    teacher = _teacher(root)
    record = student.compression_record
    assert record.svd and all(k.startswith("0.") for k in record.svd)
    for key, spec in record.svd.items():
        path = key.removeprefix("0.")
        dense = teacher.get_submodule(f"transformer_blocks.0.{path}")
        low = student.get_submodule(f"transformer_blocks.0.{path}")
        n, m = dense.out_features, dense.in_features
        # the part's own key (cross_attn) wins over the group; groups without a rank keep the ratio
        want = 4 if path in MLP else 2 if path.startswith("attn2.") else target_rank(n, m, 0.5)
        assert spec.rank == want and low.A.shape == (n, want) and low.B.shape == (want, m), key
        torch.testing.assert_close((low.A @ low.B).double(), _truncated(dense.weight, want), atol=1e-5, rtol=1e-4)
    assert {f"0.{p}" for p in MLP} <= record.svd.keys() and any(k.startswith("0.attn2.") for k in record.svd)
    assert record.steps[-1]["ranks"] == {k: v.rank for k, v in record.svd.items()}


def test_ratio_spec_puts_ranks_over_ratios_key_by_key():
    assert ratio_spec(0.6) == 0.6 and ratio_spec({"attn": 0.5}, {}) == {"attn": 0.5}
    assert ratio_spec(0.6, {"mlp": 512}) == {"attn": 0.6, "mlp": Rank(512)}
    assert ratio_spec({"attn": 0.8, "self_attn": 0.2}, {"attn": 128}) == {"attn": Rank(128), "self_attn": 0.2}


def test_explicit_ranks_on_both_families_and_their_bounds(adapter, model):
    block = adapter.blocks(model)[-1].id
    mlp_targets = plan(model, [block], {"mlp": 0.5})
    mlp = {t.key for t in mlp_targets}
    student, record = svd_compress(model, [block], ratio_spec(0.5, {"mlp": 2}))
    assert mlp and mlp < record.svd.keys()
    for key, spec in record.svd.items():
        assert spec.rank == (2 if key in mlp else target_rank(spec.out, spec.inp, 0.5)), key
    # a rank that saves nothing, or none at all, names the layer
    full = max(min(t.layer.out_features, t.layer.in_features) for t in mlp_targets)
    first = next(t for t in mlp_targets if min(t.layer.out_features, t.layer.in_features) <= full)  # raises first
    least = min(first.layer.out_features, first.layer.in_features)
    message = rf"SVD rank {full} for layer '{first.key}' .* must be in \[1, {least}\)"
    with pytest.raises(CompressionError, match=message):
        svd_compress(model, [block], ratio_spec(0.5, {"mlp": full}))
    with pytest.raises(CompressionError, match="SVD rank for 'mlp' must be >= 1"):
        plan(model, [block], {"mlp": Rank(0)})
    # iterated: at most the current rank; an explicit rank is kept exactly, whatever `multiple`
    _, rec = svd_compress(student, [block], {"mlp": Rank(2)}, multiple=64)
    assert all(rec.svd[k].rank == 2 for k in mlp)
    with pytest.raises(CompressionError, match="SVD rank 3 for layer .* exceeds its current rank 2"):
        svd_compress(student, [block], {"mlp": Rank(3)})


def test_presets_are_their_mappings_of_fractions_removed(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    assert RATIO_PRESETS == {"equal": {"attn": 0.6, "mlp": 0.6}, "attention_dominant": {"attn": 0.8, "mlp": 0.4},
                             "mlp_dominant": {"attn": 0.4, "mlp": 0.8}}
    for name, mapping in RATIO_PRESETS.items():
        assert CompressConfig(ratio=name).svd_ratio() == mapping
    teacher = _teacher(root)
    # `equal` is the single ratio 0.6 of 5.1.6 (a float covers attention and MLP)
    equal = svd_compress(teacher, ["0", "1"], RATIO_PRESETS["equal"])[1]
    assert equal.svd == svd_compress(teacher, ["0", "1"], 0.6)[1].svd

    run_compress(_params(raw, method="svd", blocks=["1"], ratio="attention_dominant"), "students/preset")
    student = load_student(root / "students" / "preset")
    direct, rec = svd_compress(teacher, ["1"], {"attn": 0.8, "mlp": 0.4})
    assert student.compression_record.svd == rec.svd
    state = direct.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in student.state_dict().items())
    # the fractions are parameters removed (eq 4.9): attention keeps at most 20 % of its weights, MLP 60 %
    for key, spec in rec.svd.items():
        kept = spec.rank * (spec.out + spec.inp) / (spec.out * spec.inp)
        assert kept <= (0.6 if key.removeprefix("1.") in MLP else 0.2), key


def test_iterated_svd_of_a_student_is_svd_of_its_product(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    run_compress(_params(raw, method="svd", blocks=["0", "1"], ratio=0.5), "students/round1")
    first = load_student(root / "students" / "round1")
    with torch.no_grad():  # retraining moves A_t, B_t away from the first factorisation
        g = torch.Generator().manual_seed(0)
        for layer in _low_rank(first).values():
            layer.A.add_(0.05 * torch.randn(layer.A.shape, generator=g))
    save_student(first, root / "students" / "round1_trained")

    run_compress(_params(raw, method="iterated_svd", blocks=["1"], ratio=0.5, student="students/round1_trained"),
                 "students/round2")
    second = load_student(root / "students" / "round2")
    rec1, rec2 = first.compression_record, second.compression_record
    assert rec2.teacher == rec1.teacher and [s["op"] for s in rec2.steps] == ["svd", "svd"]
    before, after = _low_rank(first), _low_rank(second)
    assert before.keys() == after.keys()
    for name, layer in after.items():
        key = name.removeprefix("transformer_blocks.")
        old = before[name]
        if not key.startswith("1."):  # block 0 was not chosen: as trained
            assert torch.equal(layer.A, old.A) and torch.equal(layer.B, old.B), key
            continue
        spec = rec1.svd[key]
        assert layer.rank == target_rank(spec.out, spec.inp, 0.5, rank=spec.rank) == max(1, spec.rank // 2), key
        # W_t = A_t B_t truncated at the new rank (4.4.3)
        torch.testing.assert_close((layer.A @ layer.B).double(), _truncated(old.A @ old.B, layer.rank),
                                   atol=1e-5, rtol=1e-4)
    # the same operator as svd on the student
    direct, _ = svd_compress(first, ["1"], 0.5)
    state = direct.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in second.state_dict().items())


def test_grasp_keeps_the_singular_values_with_the_highest_scores(world, generated, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    params = _params(raw, method="grasp", blocks=["1"], ratio=0.5, grasp_data=generated, grasp_images=4,
                     grasp_timesteps=4, grasp_timestep_batch=2)
    run_compress(params, "students/grasp")
    student = load_student(root / "students" / "grasp")
    assert student.compression_record.steps[-1]["grasp"] is True

    # the scores on the same data: the teacher in its pipeline, the stage's calibration
    renderer = Renderer.load("models/shapes/pixart", "pixart", for_preset(params.generate, get_preset("shapes-pixart")))
    teacher = renderer.pipeline.transformer
    objective, batches, times, generator = grasp_calibration(params, renderer)
    assert times.tolist() == [125, 375, 625, 875]
    scores = grasp_scores(teacher, objective, batches, ["1"], 0.5, timesteps=times, num_samples=4,
                          timestep_batch=2, generator=generator)
    targets = plan(teacher, ["1"], 0.5)
    assert set(scores) == {t.key for t in targets} == set(student.compression_record.svd)
    moved = 0
    for t in targets:
        low = student.get_submodule(f"transformer_blocks.{t.key}")
        _, s, _ = layer_svd(t.layer)
        keep = torch.topk(scores[t.key].double(), t.rank).indices.sort().values
        got = torch.linalg.svdvals((low.A @ low.B).double())[: t.rank]
        torch.testing.assert_close(got, s[keep].double(), atol=1e-5, rtol=1e-4)
        moved += not torch.equal(keep, torch.arange(t.rank))
    assert moved > 0  # somewhere GRASP keeps other singular values than the largest


def test_grasp_times_span_the_training_scale():
    ddpm = get_adapter("pixart").objective({"num_train_timesteps": 1000, "beta_schedule": "linear",
                                            "beta_start": 1e-4, "beta_end": 0.02})
    assert grasp_times(ddpm, 4).tolist() == [125, 375, 625, 875]
    assert torch.equal(grasp_times(ddpm, 1000), torch.arange(1000))  # the thesis: every step
    flow = get_adapter("flux").objective({})
    torch.testing.assert_close(grasp_times(flow, 4), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    with pytest.raises(UserError, match="compress.grasp_timesteps: 1001 exceeds the teacher's 1000"):
        grasp_times(ddpm, 1001)


def test_same_teacher_compares_local_paths_and_hub_ids(world, monkeypatch):
    root, _ = world
    monkeypatch.chdir(root)
    assert same_teacher("models/shapes/pixart/transformer", "models/shapes/pixart")
    assert same_teacher(str(root / "models" / "shapes" / "pixart" / "transformer"), "models/shapes/pixart")
    assert not same_teacher("models/shapes/flux/transformer", "models/shapes/pixart")
    assert not same_teacher("", "models/shapes/pixart")
    hub = "PixArt-alpha/PixArt-Sigma-XL-2-512-MS"
    cached = "/cache/hub/models--PixArt-alpha--PixArt-Sigma-XL-2-512-MS/snapshots/0123abc/transformer"
    assert same_teacher(cached, hub) and same_teacher(hub, hub)
    assert not same_teacher(cached, "black-forest-labs/FLUX.1-dev")


def test_bad_inputs_are_one_line_errors_before_anything_is_written(world, generated, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    removal, _ = svd_compress(_teacher(root), [], 0.5)  # a student with no factorised layer
    save_student(removal, root / "students" / "plain")
    # the teacher as a stage run records it (relative to the root), not the absolute path loaded here
    manifest = root / "students" / "plain" / "compression.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "teacher": "models/shapes/pixart/transformer"}))
    out = root / "students" / "bad"
    cases = [
        ({"method": "svd", "blocks": ["0"], "ratio": {"attn": 0.5, "ffn": 0.5}},
         r"compress.ratio: unknown part or group 'ffn' for pixart \(known: .*self_attn"),
        ({"method": "svd", "blocks": ["0"], "ranks": {"ffn": 4}},
         r"compress.ranks: unknown part or group 'ffn' for pixart \(known: .*mlp"),
        ({"method": "svd", "blocks": ["0"], "ranks": {"mlp": 16}},
         r"compress.ranks: SVD rank 16 for layer '0.ff.net.0.proj' \(64×16\) must be in \[1, 16\)"),
        ({"method": "svd", "blocks": ["0"], "ratio": {"modulation": 0.5}},
         "compress.ratio: .* selects no linear layer in blocks 0"),
        ({"method": "iterated_svd", "blocks": ["0"]}, "compress.student: iterated_svd re-factorises a saved SVD"),
        ({"method": "iterated_svd", "blocks": ["0"], "student": "students/plain"},
         "compress.student: students/plain has no factorised layer in blocks 0"),
        ({"method": "svd", "blocks": ["0"], "student": "models/shapes/pixart"},
         "compress.student: models/shapes/pixart: no compression.json"),
        ({"method": "grasp", "blocks": ["0"], "grasp_data": "nowhere"},
         "compress.grasp_data: nowhere: no generated dataset"),
        ({"method": "grasp", "blocks": ["0"], "grasp_data": generated, "grasp_images": 9},
         "compress.grasp_images: 9 images asked, but data/teacher_set has 8"),
    ]
    for compress, message in cases:
        with pytest.raises(UserError, match=message) as err:
            run_compress(_params(raw, **compress), out)
        assert "\n" not in str(err.value) and not out.exists(), compress
    # a student of another teacher than model.preset's: both are named, before it is loaded
    flux = params_with(raw, model={"preset": "shapes-flux"}, score=SCORE,
                       compress={"method": "svd", "blocks": ["0"], "student": "students/plain"})
    with pytest.raises(UserError, match="compress.student: students/plain was compressed from teacher "
                                        "'models/shapes/pixart/transformer', but model.preset 'shapes-flux' "
                                        "is 'models/shapes/flux'"):
        run_compress(flux, out)
    assert not out.exists()
    for compress, message in [({"ratio": "balanced"}, "compress.ratio: unknown ratio preset 'balanced'"),
                              ({"ranks": {"mlp": 0}}, r"compress.ranks: SVD ranks are positive integers \(got 0"),
                              ({"method": "prune"}, "compress.method: must be one of")]:
        with pytest.raises(ParamsError, match=message):
            parse_params({"compress": compress})
