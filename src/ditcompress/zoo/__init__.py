"""The tiny model zoo of the shapes world: tokenizers, text encoders, VAEs, teachers and CLIP.

Everything is built locally from configs with fixed seeds, trained by the pretrain stage
(`run_pretrain`) and saved in the on-disk layout of its real counterpart (PixArt-Σ, FLUX.1-dev,
OpenAI CLIP), so later stages load it with the stock diffusers / transformers loaders.
"""
