"""A few dozen NCBI-disease sentences and a tiny backbone: the smallest real training task, in seconds.

``write_subset(shared_data, directory)`` writes train.conll (60 sentences with diseases + 20 without) and
dev.conll (15 + 5, from the NCBI dev split) and a tiny BERT under ``directory``; ``base_config(...)`` is a
training config on them (max_length 64, 3 epochs, batch 8, no early stopping) as a dict for YAML.
"""

from __future__ import annotations

from pathlib import Path

from tiny import tiny_backbone

from cardioner.data import read_corpus, write_corpus


def subset(path: Path, with_spans: int, without_spans: int) -> list:
    docs, _ = read_corpus(path)
    return [d for d in docs if d.spans][:with_spans] + [d for d in docs if not d.spans][:without_spans]


def write_subset(shared_data: Path, directory: Path) -> dict[str, Path]:
    """Write (once) train.conll, dev.conll and a tiny BERT backbone under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"train": directory / "train.conll", "dev": directory / "dev.conll"}
    if not paths["train"].exists():
        corpus = shared_data / "ncbi_disease" / "conll"
        write_corpus(subset(corpus / "train.tsv", 60, 20), paths["train"], to="conll")
        write_corpus(subset(corpus / "devel.tsv", 15, 5), paths["dev"], to="conll")
    paths["model"] = tiny_backbone("bert", directory)
    return paths


def base_config(paths: dict[str, Path], **training) -> dict:
    """A config dict (sections data/model/training) for the subset; ``training`` overrides that section."""
    return {
        "data": {"train": str(paths["train"]), "dev": str(paths["dev"]), "max_length": 64, "stride": 16},
        "model": {"model": str(paths["model"]), "head": "linear"},
        "training": {"epochs": 3, "batch_size": 8, "lr": 1e-3, "patience": 0, "seed": 7, **training},
    }
