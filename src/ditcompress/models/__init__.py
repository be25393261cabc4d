"""Model-family adapters (PixArt, Flux) behind one interface, chosen by name from a registry."""

from ditcompress.models.base import BlockOutput, BlockRef, Conditioning, FamilyAdapter, Objective, unwrap
from ditcompress.models.registry import adapter_for, build_transformer, get_adapter, load_config

__all__ = [
    "BlockOutput", "BlockRef", "Conditioning", "FamilyAdapter", "Objective", "unwrap",
    "adapter_for", "build_transformer", "get_adapter", "load_config",
]
