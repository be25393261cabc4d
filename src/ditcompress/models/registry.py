"""Family adapters by name, and the real transformer configs shipped with the package."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from torch import nn

from ditcompress.models.base import FamilyAdapter, unwrap

# preset name -> (family, shipped config file); the facts of the hub's transformer/config.json
SHIPPED_CONFIGS = {
    "pixart-sigma": ("pixart", "pixart-sigma-xl-2-512-ms.json"),
    "flux-dev": ("flux", "flux-1-dev.json"),
}
_CLASS_TO_FAMILY = {"PixArtTransformer2DModel": "pixart", "FluxTransformer2DModel": "flux"}


def get_adapter(name: str) -> FamilyAdapter:
    """The adapter for family `name` ("pixart" | "flux")."""
    if name == "pixart":
        from ditcompress.models.pixart import PixArtAdapter

        return PixArtAdapter()
    if name == "flux":
        from ditcompress.models.flux import FluxAdapter

        return FluxAdapter()
    raise KeyError(f"unknown model family {name!r} (pixart or flux)")


def family_of_config(config: dict) -> str:
    """Family name from a diffusers config's `_class_name`."""
    cls = config.get("_class_name")
    if cls not in _CLASS_TO_FAMILY:
        raise KeyError(f"config _class_name {cls!r} is not a supported transformer ({', '.join(_CLASS_TO_FAMILY)})")
    return _CLASS_TO_FAMILY[cls]


def adapter_for(transformer: nn.Module) -> FamilyAdapter:
    """The adapter matching a (possibly wrapped) transformer instance."""
    return get_adapter(family_of_config({"_class_name": type(unwrap(transformer)).__name__}))


def load_config(name_or_path: str | Path) -> dict:
    """A transformer config: a shipped preset name ("pixart-sigma", "flux-dev") or a config.json path."""
    if str(name_or_path) in SHIPPED_CONFIGS:
        fname = SHIPPED_CONFIGS[str(name_or_path)][1]
        return json.loads(resources.files("ditcompress").joinpath("configs", fname).read_text())
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no such config or preset {str(name_or_path)!r} (presets: {', '.join(SHIPPED_CONFIGS)})")
    return json.loads(path.read_text())


def build_transformer(config: dict, device="meta") -> nn.Module:
    """The family's transformer built from `config` (on the meta device by default: no memory)."""
    cls = get_adapter(family_of_config(config)).transformer_cls
    import torch

    with torch.device(device):
        return cls.from_config(config)
