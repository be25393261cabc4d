"""Word-level tokenizers and the frozen T5: round trips through the stock loaders, and word order matters."""

import torch
from scipy.optimize import linear_sum_assignment
from transformers import AutoTokenizer, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from ditcompress.zoo.config import TextEncoderConfig
from ditcompress.zoo.text import (
    build_clip_tokenizer, build_t5_encoder, build_t5_tokenizer, caption_vocabulary,
)

CAPTIONS = ["a photo of a red circle left of a blue square", "a photo of three yellow triangles",
            "a photo of an orange square and a green circle"]
CFG = TextEncoderConfig(width=16, heads=4, layers=1)


def test_t5_tokenizer_is_word_level_and_reloads(tmp_path):
    words = caption_vocabulary(CAPTIONS)
    tok = build_t5_tokenizer(words, max_length=16)
    ids = tok(CAPTIONS[0]).input_ids
    # one id per word, then </s> (id 1) as T5 appends it; ids 0-2 are <pad>, </s>, <unk>
    assert ids == [3 + words.index(w) for w in CAPTIONS[0].split()] + [1]
    assert tok("a photo of a dog").input_ids == [3 + words.index(w) for w in "a photo of a".split()] + [2, 1]
    tok.save_pretrained(tmp_path)
    for loaded in (T5Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(loaded) is T5Tokenizer
        padded = loaded(CAPTIONS, padding="max_length", max_length=16)
        assert padded.input_ids == tok(CAPTIONS, padding="max_length", max_length=16).input_ids
        assert padded.input_ids[1][-1] == 0 and loaded.model_max_length == 16


def test_clip_tokenizer_is_word_level_deterministic_and_reloads(tmp_path):
    tok = build_clip_tokenizer(CAPTIONS, max_length=16)
    assert tok.get_vocab() == build_clip_tokenizer(CAPTIONS, max_length=16).get_vocab()
    tokens = tok.convert_ids_to_tokens(tok(CAPTIONS[1]).input_ids)
    assert tokens == ["<|startoftext|>"] + [f"{w}</w>" for w in CAPTIONS[1].split()] + ["<|endoftext|>"]
    tok.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert loaded(CAPTIONS).input_ids == tok(CAPTIONS).input_ids and loaded.model_max_length == 16


def _encode(model, tok, prompt):
    batch = tok([prompt], return_tensors="pt")
    return model(batch.input_ids, attention_mask=batch.attention_mask)[0][0]  # (L, D)


def _matched_distance(x, y) -> float:
    """Order-free distance of two sets of token embeddings: the largest row distance of the best pairing.

    (Rounding and sorting rows instead breaks where float noise crosses a rounding boundary.)
    """
    cost = torch.cdist(x, y).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def test_neighbour_bias_makes_binding_visible():
    # a bag-of-words encoder cannot tell which colour belongs to which shape
    tok = build_t5_tokenizer(caption_vocabulary(CAPTIONS + ["a red square and a blue circle"]), 16)
    a, b = "a photo of a red circle and a blue square", "a photo of a blue circle and a red square"
    blind = build_t5_encoder(CFG.model_copy(update={"neighbour_bias": 0.0}), len(tok), seed=0)
    with torch.no_grad():
        assert _matched_distance(_encode(blind, tok, a), _encode(blind, tok, b)) < 1e-5
        model = build_t5_encoder(CFG, len(tok), seed=0)
        # some token of one prompt has no counterpart within 0.1 in the other (a bound on any pairing)
        assert torch.cdist(_encode(model, tok, a), _encode(model, tok, b)).min(dim=1).values.max() > 0.1


def test_t5_is_frozen_seeded_and_reloads_exactly(tmp_path):
    tok = build_t5_tokenizer(caption_vocabulary(CAPTIONS), 16)
    model = build_t5_encoder(CFG, len(tok), seed=0)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    with torch.no_grad():
        ref = _encode(model, tok, CAPTIONS[0])
        torch.testing.assert_close(_encode(build_t5_encoder(CFG, len(tok), seed=0), tok, CAPTIONS[0]), ref,
                                   rtol=0, atol=0)
        assert not torch.allclose(_encode(build_t5_encoder(CFG, len(tok), seed=1), tok, CAPTIONS[0]), ref)
        model.save_pretrained(tmp_path)
        loaded = T5EncoderModel.from_pretrained(tmp_path)
        torch.testing.assert_close(_encode(loaded, tok, CAPTIONS[0]), ref, rtol=0, atol=0)
