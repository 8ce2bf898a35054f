"""The generic visualisation scripts end to end on tiny data (annotations, training curves): each writes a PNG."""

import json

import pytest

from scripts import plot_metrics, visualize_data
from tests.tools.script_helpers import png_size, tiny_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("vis_data"), "vis_tiny")


def test_visualize_data(tiny_data, tmp_path):
    train_name, _, _ = tiny_data
    path = visualize_data.main(["--dataset", train_name, "--output", str(tmp_path / "data.png"), "--num-images", "3"])
    width, height = png_size(path)
    assert width > 2 * height  # three panels side by side
    with pytest.raises(KeyError):
        visualize_data.main(["--dataset", "no_such_dataset", "--output", str(tmp_path / "x.png")])


def test_plot_metrics(tmp_path):
    rows = []
    for it in range(19, 200, 20):
        rows.append({"iteration": it, "total_loss": 10 - it / 50, "loss_class": 1.0, "loss_class_0": 1.1,
                     "loss_bbox": 0.5, "loss_bbox_dn": 0.4, "loss_salience": 0.2, "lr": 1e-4})  # fmt: skip
    rows.append({"iteration": 99, "bbox/AP": 10.0, "bbox/AP50": 20.0})  # an evaluation row at a train iteration
    rows.append({"iteration": 199, "bbox/AP": 15.0, "bbox/AP50": 30.0})
    metrics = tmp_path / "metrics.json"
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    path = plot_metrics.main(["--metrics", str(metrics), "--output", str(tmp_path / "curves.png")])
    assert min(png_size(path)) > 300
    with pytest.raises(FileNotFoundError):
        plot_metrics.main(["--metrics", str(tmp_path / "none.json"), "--output", str(tmp_path / "x.png")])
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="no rows"):
        plot_metrics.main(["--metrics", str(tmp_path / "empty.json"), "--output", str(tmp_path / "x.png")])
