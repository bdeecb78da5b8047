"""Shared fixtures: the real corpora in ../shared/data (beside the clone, as in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpora folder; tests that need it are skipped (with the path) when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared corpora not found at {SHARED_DATA} (CI keeps ../shared beside the clone)")
    return SHARED_DATA
