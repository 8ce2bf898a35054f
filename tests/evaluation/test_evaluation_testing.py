"""print_csv_format, flatten_results_dict and verify_results."""

import logging
from collections import OrderedDict

from evaluation import flatten_results_dict, print_csv_format, verify_results

RESULTS = OrderedDict(bbox={"AP": 40.0, "AP50": 60.5, "AP-person": 12.0}, other=3)


def test_flatten_results_dict():
    nested = {"bbox": {"AP": 1.0, "sub": {"x": 2}}, "top": 3}
    assert flatten_results_dict(nested) == {"bbox/AP": 1.0, "bbox/sub/x": 2, "top": 3}
    assert flatten_results_dict({}) == {}


def test_print_csv_format_skips_per_class(caplog):
    with caplog.at_level(logging.INFO):
        print_csv_format(RESULTS)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "copypaste: Task: bbox",
        "copypaste: AP,AP50",
        "copypaste: 40.0000,60.5000",
        "copypaste: other=3",
    ]


def test_verify_results(caplog):
    assert verify_results([("bbox", "AP", 40.05, 0.1)], RESULTS)
    with caplog.at_level(logging.ERROR):
        assert not verify_results([("bbox", "AP", 41.0, 0.1), ("bbox", "AR1", 1.0, 0.1)], RESULTS)
    assert "bbox/AP" in caplog.text and "bbox/AR1" in caplog.text
