"""The options several commands share, declared once (Typer reads a parameter's ``Annotated`` type)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CORPUS_FORMATS = "brat | conll | jsonl | hf | tsv (default: detect)"

# The corpora, the backbone and the budget of a training run (train, compare).
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML config (data, model, training)")]
TrainCorpus = Annotated[str | None, typer.Option(help="training corpus (brat folder, CoNLL, JSONL, HF data)")]
DevCorpus = Annotated[str | None, typer.Option(help="dev corpus: model selection and early stopping")]
CorpusFormat = Annotated[str | None, typer.Option(help=CORPUS_FORMATS)]
Backbone = Annotated[str | None, typer.Option(help="backbone name or path; 'default' = bundled MiniLM")]
Epochs = Annotated[int | None, typer.Option(help="maximum epochs")]
TrainBatchSize = Annotated[int | None, typer.Option(help="windows per batch")]
LearningRate = Annotated[float | None, typer.Option(help="backbone learning rate")]
MaxLength = Annotated[int | None, typer.Option(help="window size in subwords (default: the backbone's limit, "
                                                    "at most 512)")]
Seed = Annotated[int | None, typer.Option(help="random seed")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="any config key: --set training.lr=3e-5")]

# An export applied to documents (predict, evaluate, analyze).
ModelDir = Annotated[str, typer.Option(help="exported model folder")]
AnnotatedCorpus = Annotated[str, typer.Option(help="annotated corpus (brat folder, CoNLL, JSONL, HF data)")]
BatchSize = Annotated[int, typer.Option(help="windows per batch")]

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="log debug messages")]
