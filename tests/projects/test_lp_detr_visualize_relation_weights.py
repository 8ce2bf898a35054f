"""projects/lp_detr/tools/visualize_relation_weights.py end to end: Lambda from a checkpoint and from the training
hook's json, and errors for a bad json or another model."""

import json

import pytest

from projects.lp_detr.tools import visualize_relation_weights
from tests.tools.script_helpers import (
    LP_DETR_CONFIG,
    SALIENCE_CONFIG,
    png_size,
    save_random_model,
    tiny_fixtures,
    tiny_model_opts,
)

tiny_data, lp_detr_weights = tiny_fixtures("relation_vis_tiny")


def test_visualize_relation_weights_from_checkpoint_and_json(lp_detr_weights, tmp_path):
    weights, opts = lp_detr_weights
    path = visualize_relation_weights.main(
        ["--config-file", LP_DETR_CONFIG, "--weights", weights, "--output", str(tmp_path / "ckpt.png"), *opts]
    )
    assert min(png_size(path)) > 100
    table = {"iteration": 7, "scopes": ["local", "medium", "global"], "unused_rows": [0],
             "lambda": [[0.33, 0.33, 0.33], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]}  # fmt: skip
    (tmp_path / "relation_weights.json").write_text(json.dumps(table))
    path = visualize_relation_weights.main(
        ["--json", str(tmp_path / "relation_weights.json"), "--output", str(tmp_path / "json.png")]
    )
    assert min(png_size(path)) > 100
    (tmp_path / "bad.json").write_text(json.dumps({"iteration": 1}))
    with pytest.raises(ValueError, match="no 'lambda'"):
        visualize_relation_weights.main(["--json", str(tmp_path / "bad.json"), "--output", str(tmp_path / "x.png")])


def test_visualize_relation_weights_rejects_another_model(tiny_data, tmp_path):
    opts = tiny_model_opts(tiny_data[1])
    weights = save_random_model(SALIENCE_CONFIG, opts, tmp_path)
    with pytest.raises(ValueError, match="no LP-DETR relation weights"):
        visualize_relation_weights.main(
            ["--config-file", SALIENCE_CONFIG, "--weights", weights, "--output", str(tmp_path / "x.png"), *opts]
        )
