"""ditcompress: compress text-to-image diffusion transformers and recover them by distillation."""

__version__ = "0.1.0"
