"""Word-level tokenizers and the frozen tiny T5 encoder of the shapes world.

The tokenizers are the real transformers classes, so pipelines and processors load them
unchanged: `T5Tokenizer` with a Unigram model whose pieces are whole words ("▁red"), and
`CLIPTokenizer` with a byte-level BPE trained on the captions until every caption word is one
token. Both are word level on this vocabulary; an unknown word becomes <unk> (T5) or bytes (CLIP).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import torch
from transformers import CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer
from transformers.models.t5.modeling_t5 import T5Attention

from ditcompress.zoo.config import TextEncoderConfig

T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in every T5 checkpoint
# relative offsets read by heads 0, 1, 2, ... (cycled): previous word, next word, two back, two ahead
NEIGHBOUR_OFFSETS = (-1, 1, -2, 2)


def caption_vocabulary(captions: Iterable[str]) -> list[str]:
    """Sorted distinct words of the captions (they are lower case in the shapes world)."""
    return sorted({w for c in captions for w in c.split()})


def build_t5_tokenizer(words: list[str], max_length: int) -> T5Tokenizer:
    """A T5 tokenizer with one Unigram piece per word: word level, loadable as `T5Tokenizer`."""
    vocab = [(tok, 0.0) for tok in T5_SPECIALS] + [(f"▁{w}", -1.0) for w in words]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def build_clip_tokenizer(captions: list[str], max_length: int) -> CLIPTokenizer:
    """A `CLIPTokenizer` whose BPE is trained on the captions so that each of their words is one token."""
    base = CLIPTokenizer(model_max_length=max_length)
    # the byte alphabet (256) plus room for every merge the caption words need
    trained = base.train_new_from_iterator(sorted(set(captions)), vocab_size=256 + 64 * len(caption_vocabulary(captions)))
    # the trainer's merges are deterministic but the ids of its alphabet are not (hash order):
    # renumber as specials, sorted alphabet, then merge results in merge order
    model = json.loads(trained.backend_tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    specials = [base.bos_token, base.eos_token]
    merged = ["".join(m) for m in merges]
    alphabet = sorted(set(model["vocab"]) - set(specials) - set(merged))
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + alphabet + merged))}
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    check_word_level(tok, caption_vocabulary(captions))
    return tok


def check_word_level(tokenizer, words: list[str]) -> None:
    """Raise ValueError unless every word encodes to exactly one token."""
    split = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise ValueError(f"tokenizer splits caption words {split[:5]} into several tokens")


def t5_config(cfg: TextEncoderConfig, vocab_size: int) -> T5Config:
    """Config of the tiny T5 v1.1-style encoder (gated GELU, no dropout, T5's special ids)."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=cfg.width,
        d_kv=cfg.width // cfg.heads,
        d_ff=2 * cfg.width,
        num_layers=cfg.layers,
        num_heads=cfg.heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        is_encoder_decoder=False,
        use_cache=False,
    )


def build_t5_encoder(cfg: TextEncoderConfig, vocab_size: int, seed: int) -> T5EncoderModel:
    """The frozen text encoder: seeded random T5 whose heads attend to neighbouring words.

    Why the hand-set position bias: a randomly initialised T5 attends almost uniformly, so its
    outputs are nearly a bag of words and "a red circle and a blue square" would read like "a
    blue circle and a red square". Making head h look at offset NEIGHBOUR_OFFSETS[h] puts the
    colour into the noun's embedding and "left of" into its subject's, as a trained encoder would.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(t5_config(cfg, vocab_size))
    attn = model.encoder.block[0].layer[0].SelfAttention
    bias = torch.zeros_like(attn.relative_attention_bias.weight)  # (num_buckets, heads)
    offsets = torch.tensor([NEIGHBOUR_OFFSETS[h % len(NEIGHBOUR_OFFSETS)] for h in range(cfg.heads)])
    buckets = T5Attention._relative_position_bucket(
        offsets, bidirectional=True, num_buckets=attn.relative_attention_num_buckets,
        max_distance=attn.relative_attention_max_distance)
    bias[buckets, torch.arange(cfg.heads)] = cfg.neighbour_bias
    with torch.no_grad():
        attn.relative_attention_bias.weight.copy_(bias)
    return model.eval().requires_grad_(False)
