"""`PretrainConfig`: strict keys, bounds and cross-field checks, each error naming its field."""

import pytest
from pydantic import ValidationError

from ditcompress.zoo.config import PretrainConfig

from .conftest import shrink


@pytest.mark.parametrize("raw,needle", [
    ({"pixart": {"depth": 8}}, "depth"),
    ({"vae": {"steps": 0}}, "steps"),
    ({"flux": {"head_dim": 16}}, "axes_dims_rope"),
    ({"flux": {"axes_dims_rope": (7, 13, 12)}}, "axes_dims_rope"),
    ({"vae": {"channels": (12, 24, 48)}}, "norm_groups"),
    ({"text": {"width": 30}}, "heads"),
    ({"pixart": {"beta_schedule": "cosine"}}, "beta_schedule"),
])
def test_bad_values_are_rejected_by_name(raw, needle):
    with pytest.raises(ValidationError, match=needle):
        PretrainConfig.model_validate(raw)


def test_shrunken_config_keeps_the_architecture():
    full, tiny = PretrainConfig(), shrink()
    for section in ("pixart", "flux"):
        for key in ("prediction_type", "beta_schedule", "patch_size", "sigma_weighting", "cfg_dropout"):
            assert getattr(getattr(tiny, section), key, None) == getattr(getattr(full, section), key, None)
    assert len(tiny.vae.channels) == len(full.vae.channels)  # same down-sampling, so the same latent layout
    assert tiny.pixart.steps < full.pixart.steps and tiny.model_dump() != full.model_dump()
