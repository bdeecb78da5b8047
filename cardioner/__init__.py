"""cardioner: named-entity recognisers on any Hugging Face encoder, exported as ordinary model folders."""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {"load_model": "cardioner.export", "save_model": "cardioner.export"}


def __getattr__(name: str):
    """Import heavy names (torch, transformers) on first use only."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cardioner' has no attribute {name!r}")
