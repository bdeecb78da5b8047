"""cardioner: named-entity recognisers on any Hugging Face encoder, exported as ordinary model folders.

The public API; heavy modules (torch, transformers) are
imported on first use, so ``import cardioner`` is light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Document": "cardioner.data.document",
    "Span": "cardioner.data.document",
    "CorpusError": "cardioner.errors",
    "ConfigError": "cardioner.errors",
    "CardioNERError": "cardioner.errors",
    "read_corpus": "cardioner.data.io",
    "write_corpus": "cardioner.data.io",
    "Config": "cardioner.config",
    "load_config": "cardioner.config",
    "ModelTrainer": "cardioner.training.trainer",
    "TrainResult": "cardioner.training.trainer",
    "load_model": "cardioner.export",
    "save_model": "cardioner.export",
    "predict_path": "cardioner.inference",
    "evaluate_path": "cardioner.inference",
    "load_predictor": "cardioner.inference",
    "Predictor": "cardioner.predictor",
    "score_spans": "cardioner.evaluation",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    """Import heavy names (torch, transformers) on first use only."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cardioner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
