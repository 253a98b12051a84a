"""Packaging metadata: what setuptools reads from pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string():
    """A TOML table makes setuptools >= 77 print a deprecation box at every install."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    licenses = pytest.importorskip("packaging.licenses")  # packaging >= 24.2
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert isinstance(project["license"], str)
    assert licenses.canonicalize_license_expression(project["license"]) == project["license"]
