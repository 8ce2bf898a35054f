"""Fixtures of the modeling tests."""

import pytest

from tests.modeling.official_backbones import load_official_keys


@pytest.fixture(scope="module")
def official_keys():
    """The recorded official backbone keys and shapes (``tests/fixtures/official_backbone_keys.json``)."""
    return load_official_keys()
