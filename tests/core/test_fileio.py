"""core/fileio.py: json reads whose errors name the file."""

import pytest

from core.fileio import read_json, write_json


def test_read_json_round_trips_and_names_the_file_on_errors(tmp_path):
    path = write_json({"a": [1, 2]}, tmp_path / "ok.json")
    assert read_json(path) == {"a": [1, 2]}
    with pytest.raises(FileNotFoundError, match=r"results file not found: .*missing\.json"):
        read_json(tmp_path / "missing.json", "results file")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json is not valid json"):
        read_json(tmp_path / "bad.json")
