"""Pipelines around tiny transformers: prompt encoding, loading from disk, students swapped in."""

import pytest
import torch
from diffusers import (
    AutoencoderKL, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline, PixArtSigmaPipeline,
)
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from ditcompress.compress import save_student, svd_compress
from ditcompress.models.tiny import tiny_transformer

WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "blue", "circle", "square", "two", "left", "of"]
PROMPTS = ["a red circle", "two blue square left of a circle"]


def _tokenizer(max_length):
    """Word-level tokenizer with T5's conventions (pad 0, eos 1 appended), built without the hub."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)


def _t5():
    torch.manual_seed(1)
    return T5EncoderModel(T5Config(vocab_size=len(WORDS), d_model=12, d_kv=4, d_ff=16, num_layers=1, num_heads=3))


def _vae(latent_channels):
    torch.manual_seed(2)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=[8],
                         norm_num_groups=4, layers_per_block=1)


def tiny_pipeline(family):
    """A complete tiny pipeline of the family's real class."""
    if family == "pixart":
        return PixArtSigmaPipeline(tokenizer=_tokenizer(16), text_encoder=_t5(), vae=_vae(4),
                                   transformer=tiny_transformer("pixart-sigma"),
                                   scheduler=DPMSolverMultistepScheduler())
    torch.manual_seed(3)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(WORDS), hidden_size=10, intermediate_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=8, eos_token_id=1, pad_token_id=0))
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=_vae(4), text_encoder=clip,
                        tokenizer=_tokenizer(8), text_encoder_2=_t5(), tokenizer_2=_tokenizer(16),
                        transformer=tiny_transformer("flux-dev"))


@pytest.fixture
def saved_pipeline(family, tmp_path):
    """A tiny pipeline saved to disk, as a real one is laid out on the hub."""
    tiny_pipeline(family).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def test_encode_prompts_uses_the_pipelines_text_encoders(family, adapter, saved_pipeline):
    pipe = adapter.load_pipeline(saved_pipeline)
    cond = adapter.encode_prompts(pipe, PROMPTS, max_sequence_length=6)
    ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=6, truncation=True, return_tensors="pt") \
        if family == "pixart" else pipe.tokenizer_2(PROMPTS, padding="max_length", max_length=6, truncation=True,
                                                    return_tensors="pt")
    assert ids.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    t5 = pipe.text_encoder if family == "pixart" else pipe.text_encoder_2
    with torch.no_grad():
        mask = ids.attention_mask if family == "pixart" else None  # Flux encodes T5 without a mask
        want = t5(ids.input_ids, attention_mask=mask)[0]
    torch.testing.assert_close(cond.prompt_embeds, want)
    if family == "pixart":
        assert torch.equal(cond.attention_mask, ids.attention_mask) and cond.pooled is None
    else:
        clip_ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=8, truncation=True, return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(cond.pooled, pipe.text_encoder(clip_ids.input_ids).pooler_output)
        assert cond.attention_mask is None


def test_load_pipeline_swaps_in_a_student_and_finds_saved_ones(family, adapter, saved_pipeline, tmp_path):
    teacher = adapter.load_transformer(saved_pipeline)  # subfolder "transformer" of a pipeline dir
    student, _ = svd_compress(teacher, [b.id for b in adapter.blocks(teacher)][:2], 0.5)
    pipe = adapter.load_pipeline(saved_pipeline, transformer=student)
    assert pipe.transformer is student

    # a student saved into a pipeline layout is rebuilt (LowRankLinear included) by the same call
    pipe.save_pretrained(tmp_path / "student")
    save_student(student, tmp_path / "student" / "transformer")
    loaded = adapter.load_pipeline(tmp_path / "student")
    assert loaded.transformer.compression_record.to_json() == student.compression_record.to_json()
    kwargs = dict(num_inference_steps=2, height=8, width=8, output_type="latent",
                  generator=torch.Generator().manual_seed(0), max_sequence_length=6)
    if family == "pixart":
        kwargs["use_resolution_binning"] = False
    with torch.no_grad():
        a = pipe(PROMPTS[0], **kwargs).images
        kwargs["generator"] = torch.Generator().manual_seed(0)
        b = loaded(PROMPTS[0], **kwargs).images
    assert torch.isfinite(a).all() and torch.equal(a, b)
