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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: on 2 shared cores,
    oversubscribed threads make each step take seconds."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ncbi_subset(shared_data, tmp_path_factory) -> dict[str, Path]:
    """A few dozen NCBI-disease sentences (train/dev CoNLL) and a
    tiny BERT backbone (tests/ncbi_subset.py)."""
    from ncbi_subset import write_subset

    return write_subset(shared_data, tmp_path_factory.mktemp("ncbi"))
