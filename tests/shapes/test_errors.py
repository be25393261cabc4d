"""Bad inputs stop with one line that names the key or the path."""

import pytest

from ditcompress.params import ParamsError, parse_params
from ditcompress.shapes.config import ShapesDataConfig
from ditcompress.shapes.dataset import ShapesDataError, build_dataset, load_split


@pytest.mark.parametrize(
    "data, message",
    [
        ({"image_size": 16}, "params.yaml: data.image_size: must be >= 24 (got 16)"),
        ({"image_size": 512}, "params.yaml: data.image_size: must be <= 256 (got 512)"),
        ({"n_train": 0}, "params.yaml: data.n_train: must be >= 16 (got 0)"),
        ({"dpg_prompts": 0}, "params.yaml: data.dpg_prompts: must be >= 1 (got 0)"),
        ({"colors": ["red"]}, "params.yaml: data: colors: need at least 2 distinct colours for colour binding"),
        ({"shapes": ["circle"]}, "params.yaml: data: shapes: need at least 2 distinct shapes"),
        ({"colors": ["red", "red", "blue"]}, "params.yaml: data: colors: duplicate name 'red'"),
        ({"shapes": ["circle", "hexagon"]}, "params.yaml: data: shapes: unknown name 'hexagon' (known: circle, square"),
        ({"colors": ["red", "teal"]}, "params.yaml: data: colors: unknown name 'teal' (known: red, orange"),
    ],
)
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ParamsError) as err:
        parse_params({"data": data})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


SMALL = ShapesDataConfig(n_train=16, n_reference=4, prompts_per_task=1, dpg_prompts=1)


@pytest.mark.parametrize("seed", [-1, 2**31, "3", 1.5, True])
def test_bad_seed_is_rejected_before_any_work(tmp_path, seed):
    with pytest.raises(ShapesDataError) as err:
        build_dataset(SMALL, seed, tmp_path / "out", progress=False)
    assert str(err.value) == f"seed: must be an integer in [0, 2147483647] (got {seed!r})"
    assert not (tmp_path / "out").exists()


def test_unwritable_output_dir_names_the_path(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    out = blocker / "shapes"
    with pytest.raises(ShapesDataError) as err:
        build_dataset(SMALL, 0, out, progress=False)
    assert str(err.value).startswith(f"{out}: output directory is not writable (") and "\n" not in str(err.value)
    assert blocker.read_text() == "not a directory"


def test_wrong_config_type_and_missing_split(tmp_path):
    with pytest.raises(ShapesDataError, match=r"^data: expected a ShapesDataConfig, got dict$"):
        build_dataset({"image_size": 32}, 0, tmp_path, progress=False)
    with pytest.raises(ShapesDataError, match="train/images.npy: missing"):
        load_split(tmp_path / "train")
