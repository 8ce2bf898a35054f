"""Locating the parity fixtures recorded from the official implementations (see ../shared/parity/README.md).

Tests read the directory from ``PARITY_FIXTURES`` (default: ``../shared/parity`` relative to the repository
root) and must pass unchanged on other fixture sets with the same ``spec.json`` hyper-parameters.
"""

import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixtures_root() -> str:
    return os.environ.get("PARITY_FIXTURES", os.path.join(ROOT, "..", "shared", "parity"))


def fixture_dir(model: str) -> str:
    """``<root>/<model>``; a missing directory skips the test unless PARITY_FIXTURES was set explicitly."""
    path = os.path.join(fixtures_root(), model)
    if not os.path.isdir(path):
        if "PARITY_FIXTURES" in os.environ:
            raise FileNotFoundError(f"PARITY_FIXTURES={os.environ['PARITY_FIXTURES']} has no '{model}' directory")
        pytest.skip(f"parity fixtures not found at {path} (set PARITY_FIXTURES)")
    return path


def load_spec(model: str) -> dict:
    with open(os.path.join(fixture_dir(model), "spec.json")) as f:
        return json.load(f)


def load_case(model: str, name: str):
    """A ``.pt`` case file, loaded on CPU."""
    return torch.load(os.path.join(fixture_dir(model), name), map_location="cpu", weights_only=False)
