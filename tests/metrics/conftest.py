"""Tiny local models in their real on-disk layouts (no network): CLIP, open_clip HPS, Mask2Former."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A 2-layer transformers CLIP with a byte-level tokenizer and processor, saved with save_pretrained."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    out = tmp_path_factory.mktemp("tiny_clip")
    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    with torch.no_grad():  # this seed's image-text cosines are all negative: flip them so CLIP scores are > 0
        model.text_projection.weight.neg_()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(out)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return str(out)


TINY_HPS_ARCH = "tiny-hps-ViT"


@pytest.fixture(scope="session")
def tiny_hps(tmp_path_factory):
    """A tiny open_clip ViT registered as an architecture, its HPS-style checkpoint and prompt files."""
    import open_clip

    root = tmp_path_factory.mktemp("tiny_hps")
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (root / f"{TINY_HPS_ARCH}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / f"{TINY_HPS_ARCH}.json")
    torch.manual_seed(1)
    model = open_clip.create_model(TINY_HPS_ARCH, pretrained=None)
    ckpt = root / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)  # the layout of xswu/HPSv2 checkpoints
    prompts = root / "benchmark"
    prompts.mkdir()
    for k, style in enumerate(("anime", "concept-art", "paintings", "photo")):
        (prompts / f"{style}.json").write_text(json.dumps([f"{style} picture number {i}" for i in range(3 + k)]))
    return {"arch": TINY_HPS_ARCH, "checkpoint": str(ckpt), "prompts_dir": str(prompts)}


@pytest.fixture(scope="session")
def tiny_mask2former_dir(tmp_path_factory):
    """A tiny Swin-backbone Mask2Former (3 classes) with its image processor, saved with save_pretrained."""
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)

    out = tmp_path_factory.mktemp("tiny_m2f")
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    labels = {0: "circle", 1: "square", 2: "triangle"}
    cfg = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                            encoder_feedforward_dim=64, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                            dim_feedforward=64, num_queries=8, num_labels=3, id2label=labels,
                            label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(cfg).eval().save_pretrained(out)
    Mask2FormerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(out)
    return str(out)


@pytest.fixture
def images():
    """Eight random RGB uint8 images of a non-square size."""
    return np.random.default_rng(0).integers(0, 256, (8, 40, 48, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def tiny_vilt_dir(tmp_path_factory):
    """A tiny ViLT VQA classifier (answers "yes" / "no") with a word-level BERT tokenizer."""
    from transformers import BertTokenizer, ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    out = tmp_path_factory.mktemp("tiny_vilt")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "is", "are", "there", "a", "the", "circle", "square", "?"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    cfg = ViltConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, image_size=32, patch_size=16, max_position_embeddings=40, num_labels=2,
                     id2label={0: "yes", 1: "no"}, label2id={"yes": 0, "no": 1})
    torch.manual_seed(0)
    ViltForQuestionAnswering(cfg).eval().save_pretrained(out)
    processor = ViltProcessor(image_processor=ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=32),
                              tokenizer=tokenizer)
    processor.save_pretrained(out)
    return str(out)
