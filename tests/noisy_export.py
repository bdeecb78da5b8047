"""A tiny export that predicts many entities: a few training steps, then its head spread with noise.

A barely trained model predicts O everywhere, which makes every "the answers are equal" check pass vacuously;
spreading the head's weights makes it predict many entities of every type (as tests/test_scripts.py does).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny import tiny_backbone

from cardioner.config import config_from_dict
from cardioner.data import read_corpus
from cardioner.training.trainer import ModelTrainer

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ncbi_sample"


def noisy_tiny_export(root: Path, seed: int = 0, max_length: int = 48) -> Path:
    """A tiny BERT + CRF trained 6 steps on 12 sample abstracts,
    head spread with noise, exported under ``root``."""
    train, _ = read_corpus(SAMPLE / "train")
    config = config_from_dict({
        "data": {"max_length": max_length, "stride": max_length // 4, "train": str(SAMPLE / "train")},
        "model": {"model": str(tiny_backbone("bert", root)), "use_crf": True},
        "training": {"epochs": 1, "max_steps": 6, "batch_size": 8, "lr": 1e-3, "seed": 5},
    })
    trainer = ModelTrainer(config)
    trainer.train(train[:12])
    with torch.no_grad():
        for name, parameter in trainer.model.named_parameters():
            if name.endswith("classifier.weight"):
                parameter.add_(
                    0.5 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed))
                )
    return trainer.save(root / "model")
