"""The score stage's library on the session's tiny shapes world: files, figures against direct
computations, resume from the measurement memo, the other algorithms, Flux, and bad inputs."""

import json

import numpy as np
import pytest
import torch

from ditcompress.compress import remove_blocks
from ditcompress.data.config import for_preset
from ditcompress.errors import UserError
from ditcompress.metrics import get_evaluator
from ditcompress.metrics.benchmark import load_reference
from ditcompress.models.presets import get_preset
from ditcompress.params import ParamsError
from ditcompress.sampling import Renderer, image_seeds
from ditcompress.score import block_magnitude
from ditcompress.score.probe import modified
from ditcompress.score.run import run_score

from ..shrunk import params_with

SCORE = {"prompts": 6, "cka_prompts": 2, "batch_size": 6, "damage_images_per_prompt": 1, "device": "cpu",
         "selection": {"k": 1, "n_trials": 3}}


def _score(raw, **over):
    return params_with(raw, score={**SCORE, **over})


def test_every_criterion_and_the_greedy_selection(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    params = _score(raw)
    summary = run_score(params, "data/score", plots_dir="plots/score")
    imp = json.loads((root / "data" / "score" / "importance.json").read_text())
    sel = json.loads((root / "data" / "score" / "selection.json").read_text())
    assert imp["blocks"] == ["0", "1"]
    assert set(imp["criteria"]) == {"magnitude", "cka", "cka_intensity", "rms", "cmmd", "clip_score", "rank_sum",
                                    "cmmd_per_param", "geneval", "damage"}

    # against direct computations: magnitude of the loaded teacher, CMMD and CLIP score of block 1
    # removed by the compression operator and rendered by the evaluate stage's renderer
    gen = for_preset(params.generate.model_copy(update={"batch_size": 6}), get_preset("shapes-pixart"))
    renderer = Renderer.load("models/shapes/pixart", "pixart", gen)
    teacher = renderer.pipeline.transformer
    assert imp["criteria"]["magnitude"] == pytest.approx(block_magnitude(teacher), rel=1e-12)
    reference = load_reference("data/shapes/reference", limit=6)
    student, _ = remove_blocks(teacher, ["1"])
    with renderer.using(student):
        images = renderer.render(list(reference.prompts), image_seeds(0, "score", 6))
    cmmd = get_evaluator("cmmd", clip_path="models/shapes/clip", device="cpu").run(images, reference=reference)["cmmd"]
    clip = get_evaluator("clip_score", clip_path="models/shapes/clip", device="cpu").run(images, list(reference.prompts))
    assert imp["criteria"]["cmmd"]["1"] == pytest.approx(cmmd, rel=1e-9)
    assert imp["criteria"]["clip_score"]["1"] == pytest.approx(clip["clip_score"], rel=1e-9)
    removed = sum(p.numel() for p in teacher.parameters()) - sum(p.numel() for p in student.parameters())
    assert imp["removed_params"]["1"] == removed
    assert imp["criteria"]["cmmd_per_param"]["1"] == pytest.approx(cmmd / removed)
    for b in imp["blocks"]:
        assert imp["criteria"]["damage"][b] == pytest.approx(imp["reference"]["geneval"] - imp["criteria"]["geneval"][b])
        assert imp["criteria"]["cka_intensity"][b] == pytest.approx(1 - imp["criteria"]["cka"][b])
        assert len(imp["cka_matrix"]["values"][b]) == len(imp["cka_matrix"]["timesteps"]) == 3  # 3 sampling steps

    # the greedy pick is the block with the lower rank sum, its figures those of that block alone
    best = min(imp["blocks"], key=lambda b: (imp["criteria"]["rank_sum"][b], b))
    assert sel["algorithm"] == "greedy" and sel["blocks"] == [best] and sel["stopped"] == "k"
    assert sel["cmmd"] == imp["criteria"]["cmmd"][best]
    total = sum(p.numel() for p in teacher.parameters())
    assert sel["kept_fraction"] == pytest.approx(1 - imp["removed_params"][best] / total)
    assert summary["selection"]["kept_fraction"] == sel["kept_fraction"]
    assert summary["renders"] == 3  # unmodified + each block alone; greedy's step reuses them

    figures = {p.name for p in (root / "plots" / "score" / "figures").iterdir()}
    assert {"strip_remove.png", "strip_svd.png", "cka_heatmap.png", "spearman.png", "greedy_iterations.png"} <= figures
    rows = json.loads((root / "plots" / "score" / "blocks.json").read_text())
    assert [r["block"] for r in rows] == ["0", "1"] and rows[1]["cmmd"] == imp["criteria"]["cmmd"]["1"]

    # a rerun measures nothing again (the memo), and gives the same files
    again = run_score(params, "data/score", plots_dir="plots/score")
    assert again["renders"] == 0
    assert json.loads((root / "data" / "score" / "selection.json").read_text()) == sel


def test_optuna_exhaustive_manual_and_svd(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    crit = ["magnitude", "metric"]
    optuna = run_score(_score(raw, criteria=crit, selection={**SCORE["selection"], "algorithm": "optuna"}),
                       "data/score_optuna")
    sel = json.loads((root / "data" / "score_optuna" / "selection.json").read_text())
    assert sorted(sel["trials"][0]["blocks"]) == sorted(sel["greedy"]["blocks"])  # the prior comes first
    assert sel["cmmd"] <= sel["greedy"]["cmmd"] and len(sel["trials"]) == 2  # n_trials 3 > C(2, 1): each once
    assert (root / "data" / "score_optuna" / "optuna.db").is_file()
    assert optuna["selection"]["cmmd"] == sel["cmmd"]

    run_score(_score(raw, criteria=crit, selection={"algorithm": "exhaustive", "k": 1}), "data/score_ex")
    ex = json.loads((root / "data" / "score_ex" / "selection.json").read_text())
    assert ex["cmmd"] == min(t["cmmd"] for t in ex["trials"]) and len(ex["trials"]) == 2

    run_score(_score(raw, criteria=crit, modification="svd", selection={"algorithm": "manual", "blocks": ["0", "1"]}),
              "data/score_svd")
    svd = json.loads((root / "data" / "score_svd" / "selection.json").read_text())
    assert svd["blocks"] == ["0", "1"] and svd["ratios"] == {"0": 0.6, "1": 0.6}
    assert 0 < svd["removed_params"] and 0.4 < svd["kept_fraction"] < 1  # only the linears shrink


def test_flux_blocks_rank_in_one_list_with_their_text_stream(world, monkeypatch):
    root, raw = world
    monkeypatch.chdir(root)
    params = params_with(raw, model={"preset": "shapes-flux"},
                         score={**SCORE, "criteria": ["magnitude", "cka", "metric", "cmmd_per_param"],
                                "selection": {"algorithm": "ranking", "criterion": "cmmd_per_param", "k": 1}})
    run_score(params, "data/score_flux")
    imp = json.loads((root / "data" / "score_flux" / "importance.json").read_text())
    assert imp["blocks"] == ["double.0", "single.0"]
    assert set(imp["criteria"]["cka_text"]) == {"double.0", "single.0"}
    assert imp["removed_params"]["double.0"] != imp["removed_params"]["single.0"]  # why eq 4.15 exists
    sel = json.loads((root / "data" / "score_flux" / "selection.json").read_text())
    per_param = imp["criteria"]["cmmd_per_param"]
    assert sel["blocks"] == [min(per_param, key=per_param.get)]


@pytest.mark.parametrize("score, message", [
    ({"selection": {"k": 2}}, r"^score.selection.k: 2 blocks of 2 means removing every block"),
    ({"selection": {"algorithm": "manual", "blocks": ["0", "5"]}}, r"^score.selection.blocks: unknown block id '5'"),
    ({"selection": {"algorithm": "exhaustive", "k": 1, "max_subsets": 1}},
     r"^score.selection.max_subsets: exhaustive over C\(2, 1\) = 2"),
])
def test_bad_selections_fail_before_any_work(world, monkeypatch, score, message):
    root, raw = world
    monkeypatch.chdir(root)
    with pytest.raises(UserError, match=message):
        run_score(_score(raw, criteria=["magnitude"], **score), "data/score_bad")


@pytest.mark.parametrize("score, message", [
    ({"criteria": ["magnitude", "entropy"]}, r"score.criteria: unknown criterion 'entropy'"),
    ({"selection": {"algorithm": "beam"}}, r"score.selection.algorithm: unknown algorithm 'beam'"),
    ({"selection": {"cmmd_threshold": 0}}, r"score.selection.cmmd_threshold: must be > 0"),
    ({"selection": {"algorithm": "greedy", "criterion": "magnitude"}}, r"score.selection: criterion: greedy re-ranks"),
])
def test_bad_params_are_one_line_errors_naming_the_key(score, message):
    from ditcompress.params import parse_params

    with pytest.raises(ParamsError, match=message) as err:
        parse_params({"score": score})
    assert "\n" not in str(err.value)


def test_modified_restores_the_very_same_model(family, adapter, model, inputs):
    """In place and back (tiny configs of the real PixArt-Σ / FLUX.1-dev): equal to the operators' students."""
    from ditcompress.compress import svd_compress

    latents, t, cond = inputs
    victim = adapter.blocks(model)[1].id
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        full = adapter.predict(model, latents, t, cond)
        for modification, student in (("remove", remove_blocks(model, [victim])[0]),
                                      ("svd", svd_compress(model, [victim], 0.6)[0])):
            with modified(model, [victim], modification, 0.6) as m:
                assert m is model
                np.testing.assert_array_equal(adapter.predict(m, latents, t, cond),
                                              adapter.predict(student, latents, t, cond))
            after = adapter.predict(model, latents, t, cond)
            np.testing.assert_array_equal(after, full)
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert [b.id for b in adapter.blocks(model)] == [b.id for b in adapter.blocks(remove_blocks(model, [])[0])]


def test_tinyfusion_learns_its_masks_on_the_generated_set(world, monkeypatch):
    """The stage's glue: the caption and generate stages' output, VAE latents, cached prompts, masks."""
    from ditcompress.data.caption import run_caption
    from ditcompress.data.generate import run_generate
    from ditcompress.data.latents import teacher_batches

    root, raw = world
    monkeypatch.chdir(root)
    tf = {"steps": 4, "batch_size": 4, "data": "data/teacher_tf", "lora_rank": 2}
    params = _score(raw, criteria=["magnitude"], selection={"algorithm": "tinyfusion", "k": 1, "tinyfusion": tf})
    run_caption(params.caption.model_copy(update={"shard_size": 16, "captioner": "scene"}), "data/shapes/train",
                "data/captions_tf")
    gen = for_preset(params.generate.model_copy(update={"num_images": 8, "shard_size": 4}), get_preset("shapes-pixart"))
    run_generate(gen, "data/captions_tf", "models/shapes/pixart", "pixart", "data/teacher_tf")

    renderer = Renderer.load("models/shapes/pixart", "pixart", gen)
    latents, cond = next(teacher_batches(renderer, "data/teacher_tf", 4, seed=0))
    assert latents.shape == (4, 4, 8, 8) and cond.prompt_embeds.shape[0] == 4
    # the latents are the VAE's of the generated images, scaled as the pipeline unscales them
    decoded = renderer.pipeline.vae.decode(latents[:1] / renderer.pipeline.vae.config.scaling_factor).sample
    assert torch.isfinite(decoded).all() and decoded.shape == (1, 3, 32, 32)
    # endless (8 images: an epoch is 2 batches), the same seeded order on every run
    first, again = teacher_batches(renderer, "data/teacher_tf", 4, seed=0), teacher_batches(renderer, "data/teacher_tf", 4, seed=0)
    for _ in range(5):
        a, b = next(first), next(again)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1].prompt_embeds, b[1].prompt_embeds)

    run_score(params, "data/score_tf")
    sel = json.loads((root / "data" / "score_tf" / "selection.json").read_text())
    assert sel["algorithm"] == "tinyfusion" and len(sel["blocks"]) == 1
    group = sel["trials"][0]
    assert sum(group["probabilities"]) == pytest.approx(1.0) and len(group["masks"]) == 2  # C(2, 1)
    dropped = [b for b in group["blocks"] if b not in group["masks"][group["best"]]]
    assert sel["blocks"] == dropped


def test_a_student_is_scored_with_its_teacher_ids_and_the_teachers_parameter_count(world, monkeypatch):
    """Later rounds score a saved student: its surviving blocks keep teacher ids, fractions are of the teacher."""
    from ditcompress.compress.student import save_student

    root, raw = world
    monkeypatch.chdir(root)
    teacher = Renderer.load("models/shapes/pixart", "pixart", for_preset(
        params_with(raw).generate, get_preset("shapes-pixart"))).pipeline.transformer
    student, record = remove_blocks(teacher, ["0"])
    save_student(student, root / "students" / "score_drop0", record)
    params = _score(raw, student="students/score_drop0", criteria=["magnitude", "metric"],
                    modification="svd", selection={"algorithm": "greedy", "k": 1})
    run_score(params, "data/score_student")
    imp = json.loads((root / "data" / "score_student" / "importance.json").read_text())
    sel = json.loads((root / "data" / "score_student" / "selection.json").read_text())
    total = sum(p.numel() for p in teacher.parameters())
    assert imp["blocks"] == ["1"] and imp["teacher_params"] == total
    assert imp["model_params"] == sum(p.numel() for p in student.parameters())
    assert sel["blocks"] == ["1"]
    assert sel["kept_fraction"] == pytest.approx((imp["model_params"] - sel["removed_params"]) / total)
    assert sel["model_kept_fraction"] == pytest.approx(imp["model_params"] / total)
