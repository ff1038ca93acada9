"""Fixtures for the overlay tests: a CA holder's state, built once and copied per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from authority_fixture import copy_authority, make_authority

from services.nebula.overlay.state import NebulaPaths


@pytest.fixture(scope="session")
def authority_template(tmp_path_factory) -> Path:
    return make_authority(tmp_path_factory.mktemp("template"))


@pytest.fixture
def ca_paths(authority_template, tmp_path) -> NebulaPaths:
    return copy_authority(authority_template, tmp_path / "state")
