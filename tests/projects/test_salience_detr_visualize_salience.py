"""projects/salience_detr/tools/visualize_salience.py end to end on tiny data: one PNG per image, salience maps over
the original image, and an error for a model without salience."""

import pytest
from torchvision.ops import box_iou

from core.lazy import LazyConfig, instantiate
from data.mapper import read_image
from projects.salience_detr.tools import visualize_salience
from tests.tools.script_helpers import (
    LP_DETR_CONFIG,
    SALIENCE_CONFIG,
    png_size,
    save_random_model,
    tiny_fixtures,
    tiny_model_opts,
)

tiny_data, lp_detr_weights = tiny_fixtures("salience_vis_tiny")


def test_visualize_salience(tiny_data, tmp_path):
    _, val_name, records = tiny_data
    opts = tiny_model_opts(val_name)
    weights = save_random_model(SALIENCE_CONFIG, opts, tmp_path)
    image = records[0]["file_name"]
    pngs = visualize_salience.main(
        ["--config-file", SALIENCE_CONFIG, "--weights", weights, "--input", image, "--output", str(tmp_path / "sal"),
         "--device", "cpu", *opts]
    )  # fmt: skip
    assert len(pngs) == 1
    width, height = png_size(pngs[0])
    assert width > 3 * height  # detections + one panel per level (4 levels), side by side


def test_salience_maps_cover_the_original_image(tiny_data, tmp_path):
    _, val_name, records = tiny_data
    cfg = LazyConfig.apply_overrides(LazyConfig.load(SALIENCE_CONFIG), tiny_model_opts(val_name))
    model = instantiate(cfg.model).eval()
    inputs = instantiate(cfg.dataloader.test.mapper).inference_input(read_image(records[0]["file_name"]))
    maps, detections = visualize_salience.salience_maps(model, inputs)
    assert len(maps) == 4
    for level in maps:
        assert tuple(level.shape) == (inputs["height"], inputs["width"])
        assert float(level.min()) >= 0.0 and float(level.max()) <= 1.0
    # at most the 20 detections of the options; the config's duplicate suppression may drop some
    assert 0 < len(detections["scores"]) <= 20
    assert box_iou(detections["boxes"], detections["boxes"]).triu(1).max() <= model.nms_iou_threshold


def test_visualize_salience_rejects_a_model_without_salience(tiny_data, lp_detr_weights, tmp_path):
    weights, opts = lp_detr_weights
    image = tiny_data[2][0]["file_name"]
    with pytest.raises(ValueError, match="no salience"):
        visualize_salience.main(
            ["--config-file", LP_DETR_CONFIG, "--weights", weights, "--input", image, "--output", str(tmp_path),
             "--device", "cpu", *opts]
        )  # fmt: skip
