"""engine/inputs.py: the image files a command line names, and one output name per input."""

import os

from engine.inputs import collect_inputs, output_name


def test_collect_inputs_folder_and_dedup(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    paths = collect_inputs([str(tmp_path), str(tmp_path / "a.jpg")])
    assert [os.path.basename(p) for p in paths] == ["a.jpg", "b.png"]


def test_output_name_is_unique_per_folder():
    used: set[str] = set()
    names = [output_name(path, used) for path in ("a/x.jpg", "b/x.png", "x.tif", "y.png")]
    assert names == ["x.png", "x_1.png", "x_2.png", "y.png"]
