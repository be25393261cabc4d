"""Tiny pipelines saved like the real ones (PixArt-Σ, LLaVA/JoyCaption) and small caption sets and image folders."""

import json

import numpy as np
import pytest
import torch

from ditcompress.models.tiny import tiny_transformer

from ..threads import torch_threads

WORDS = ("a photo of an the red green blue yellow circle square triangle two three left right above below "
         "and describe this image write caption user assistant system").split()
PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a red circle", "three yellow circles",
           "a blue square above a green square", "a photo of a triangle", "a red square", "two green circles",
           "a yellow triangle", "a blue circle right of a red square"]


def word_tokenizer(extra_special=()):
    """A T5-style unigram tokenizer over `WORDS` (whole words, letters as fallback), built without the hub."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    special = ["<pad>", "</s>", "<unk>", *extra_special]
    pieces = [(t, 0.0) for t in special] + [("\u2581" + w, -1.0) for w in WORDS] + [("\u2581", -2.0)]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz:.,"]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok


def build_tiny_pixart(path):
    """A seeded PixArtSigmaPipeline (16 px images) saved with `save_pretrained`."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    tokenizer = T5TokenizerFast(tokenizer_object=word_tokenizer(), pad_token="<pad>", eos_token="</s>",
                                unk_token="<unk>", extra_ids=0)
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=12, d_kv=6, d_ff=24, num_layers=1,
                                           num_heads=2))
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        sample_size=16)
    transformer = tiny_transformer("pixart-sigma", num_layers=2)  # caption_channels 12 = d_model
    pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.save_pretrained(path)
    return path


def build_tiny_flux(path):
    """A seeded FluxPipeline (CLIP + T5 text encoders, 16 px images) saved with `save_pretrained`."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

    def tokenizer(max_length):
        return PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(), pad_token="<pad>", eos_token="</s>",
                                       unk_token="<unk>", model_max_length=max_length)

    clip_tok, t5_tok = tokenizer(8), tokenizer(8)
    torch.manual_seed(0)
    # widths match the tiny transformer: pooled_projection_dim 10, joint_attention_dim 12
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(clip_tok), hidden_size=10, intermediate_size=20,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=8,
                                        bos_token_id=clip_tok.eos_token_id, eos_token_id=clip_tok.eos_token_id,
                                        pad_token_id=clip_tok.pad_token_id))
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tok), d_model=12, d_kv=6, d_ff=24, num_layers=1, num_heads=2))
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                        sample_size=16, shift_factor=0.0)
    transformer = tiny_transformer("flux-dev")  # in_channels 16 = 4 latent channels packed 2x2
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=clip_tok,
                        text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)
    pipe.save_pretrained(path)
    return path


def build_tiny_llava(path):
    """A seeded LLaVA (CLIP vision tower + Llama) with processor and chat template, saved like a hub checkpoint."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_tokenizer(["<s>", "<image>"]), pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        extra_special_tokens={"image_token": "<image>"})
    template = ("{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
                "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}{% endif %} . {% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    processor = LlavaProcessor(CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                               tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               chat_template=template, num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=16, patch_size=8)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       initializer_range=0.3)  # large weights: the image visibly changes a greedy caption
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_pixart(tmp_path_factory):
    """Directory of a saved tiny PixArt-Σ pipeline."""
    return build_tiny_pixart(tmp_path_factory.mktemp("tiny_pixart"))


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory):
    """Directory of a saved tiny FLUX.1-dev-architecture pipeline."""
    return build_tiny_flux(tmp_path_factory.mktemp("tiny_flux"))


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory):
    """Directory of a saved tiny LLaVA checkpoint."""
    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def caption_set(tmp_path_factory):
    """A folder with one caption file: ten shapes-world captions keyed `img_00`..`img_09`."""
    folder = tmp_path_factory.mktemp("captions")
    rows = [{"id": f"img_{i:02d}", "caption": p} for i, p in enumerate(PROMPTS)]
    (folder / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def shapes_split(tmp_path):
    """A 7-image split folder in the layout `shapes.dataset.load_split` reads (random pixels)."""
    folder = tmp_path / "train"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "images.npy", rng.integers(0, 256, (7, 16, 16, 3), dtype=np.uint8))
    with open(folder / "metadata.jsonl", "w") as f:
        for i in range(7):
            item = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": PROMPTS[i]}
            scene = {"background": [120, 120, 120], "objects": []}
            f.write(json.dumps({"id": f"train_{i:06d}", "caption": item["prompt"], "tag": item["tag"],
                                "geneval": item, "scene": scene}) + "\n")
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread, like the worker processes (CPU sums can depend on the thread count)."""
    with torch_threads(1):
        yield


class RecordingTracker:
    """Records what a stage logs through the tracker interface (MLflow's `StageRun` in the stages)."""

    def __init__(self):
        self.metrics, self.images = [], {}

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, metrics))

    def log_image(self, image, name):
        self.images[name] = image


@pytest.fixture(scope="session")
def make_tracker():
    """A factory of `RecordingTracker`s (usable from fixtures of any scope)."""
    return RecordingTracker
