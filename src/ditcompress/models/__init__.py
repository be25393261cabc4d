"""Model-family adapters (PixArt, Flux) behind one interface, chosen by name from a registry."""

from __future__ import annotations

from ditcompress.utils.lazy import lazy_getattr

# name -> module; imported on first use so that `ditcompress.models.presets` (read by params
# validation) does not load torch and diffusers
_EXPORTS = {
    "BlockOutput": "ditcompress.models.base",
    "BlockRef": "ditcompress.models.base",
    "Conditioning": "ditcompress.models.base",
    "FamilyAdapter": "ditcompress.models.base",
    "Objective": "ditcompress.models.base",
    "unwrap": "ditcompress.models.base",
    "adapter_for": "ditcompress.models.registry",
    "build_transformer": "ditcompress.models.registry",
    "get_adapter": "ditcompress.models.registry",
    "load_config": "ditcompress.models.registry",
}

__all__ = [
    "BlockOutput", "BlockRef", "Conditioning", "FamilyAdapter", "Objective", "unwrap",
    "adapter_for", "build_transformer", "get_adapter", "load_config",
]


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
