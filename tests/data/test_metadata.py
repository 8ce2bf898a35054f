"""Metadata values derived lazily by providers: read once, and not at all for keys set outright."""

import pytest

from data.catalog import Metadata


def counting_provider(values):
    calls = []

    def provide():
        calls.append(1)
        return dict(values)

    return provide, calls


def test_provider_runs_once_for_all_its_keys():
    provide, calls = counting_provider({"thing_classes": ["a", "b"], "json_file": "x.json"})
    meta = Metadata("d").set_provider(["thing_classes", "json_file"], provide)
    assert calls == []
    assert meta.thing_classes == ["a", "b"] and meta.json_file == "x.json"
    assert meta.as_dict()["thing_classes"] == ["a", "b"]
    assert len(calls) == 1


def test_a_key_set_outright_is_not_derived_again():
    provide, calls = counting_provider({"thing_classes": ["a"], "json_file": "derived.json"})
    meta = Metadata("d").set_provider(["thing_classes", "json_file"], provide)
    meta.set(json_file="loaded.json")  # e.g. the loader sets the file it read
    assert meta.as_dict()["json_file"] == "loaded.json"
    assert meta.thing_classes == ["a"] and len(calls) == 1
    meta.as_dict()
    assert len(calls) == 1


def test_registered_value_must_agree_with_the_derived_one():
    provide, _ = counting_provider({"thing_classes": ["a", "b"]})
    meta = Metadata("d", thing_classes=["a", "c"]).set_provider(["thing_classes"], provide)
    with pytest.raises(ValueError, match="registered with"):
        meta.as_dict()
