"""Shared fixture: the tiny world, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatforge.world import write_world


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world_tiny")
    write_world(out, seed=1234, size="tiny")
    return out
