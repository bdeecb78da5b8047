"""The options several commands share, declared once (Typer reads a parameter's ``Annotated`` type)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cardioner.modeling import HEAD_SETTINGS

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
# The model's settings: help and choices from their one declaration (cardioner.modeling.HEAD_SETTINGS).
Head = Annotated[str | None, typer.Option(help=f"{HEAD_SETTINGS['head'].help}: "
                                               f"{' | '.join(HEAD_SETTINGS['head'].choices)}")]
Crf = Annotated[bool | None, typer.Option("--crf/--no-crf", help=HEAD_SETTINGS["use_crf"].help)]
Sets = Annotated[list[str] | None, typer.Option("--set", help="any config key: --set training.lr=3e-5")]

# An export applied to documents (predict, evaluate, analyze).
ModelDir = Annotated[str, typer.Option(help="exported model folder")]
AnnotatedCorpus = Annotated[str, typer.Option(help="annotated corpus (brat folder, CoNLL, JSONL, HF data)")]
BatchSize = Annotated[int, typer.Option(help="windows per batch")]
ExportMaxLength = Annotated[int | None, typer.Option(help="window size in subwords (default: as trained)")]
ExportStride = Annotated[int | None, typer.Option(help="window overlap in subwords (default: as trained)")]
SpanErrors = Annotated[
    str,
    typer.Option(
        "--span-errors",
        help="spans whose offsets do not fit their annotated "
        "string: error | skip | realign (data.span_errors)",
    ),
]

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="log debug messages")]
