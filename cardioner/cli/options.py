"""The options several commands share, declared once (Typer reads a parameter's ``Annotated`` type), and
how every command's options show in ``--help``.

Every option that takes a value names it with a metavar a person reads (``PATH``, ``N``, ``KEY=VALUE``),
declared with the option; without one, Typer would show the Python type (``<str>``, ``<list[str]>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from cardioner.config import CHOICES, CRF_LR_FACTOR, HEAD_LR_FACTOR, default_of
from cardioner.modeling import HEAD_SETTINGS


def described(key: str, text: str, default: str | None = None) -> str:
    """The help of an option that sets the config ``key``: ``text``, the key's choices and its default, both
    read from the key's one declaration (``cardioner.config``: its field, CHOICES; the model's settings come
    from ``modeling.HEAD_SETTINGS``), never typed twice. ``default`` words a default the field holds as None
    ("the backbone's limit")."""
    choices = CHOICES.get(key)
    if default is None:
        value = default_of(key)
        if isinstance(value, bool):
            value = "on" if value else "off"
        default = "none" if value is None else value
    return f"{text}{': ' + ' | '.join(choices) if choices else ''} (default: {default}; {key})"


class NamedArgument(TyperArgument):
    """An argument whose ``--help`` row shows its metavar alone (Typer adds its type: ``<list[Path]>``)."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None if self.metavar is not None else super().display_type_rich(ctx)


def readable(params: list) -> list:
    """``params`` as ``--help`` should show them: flags (``--verbose``, ``--crf/--no-crf``, ``--help``) with
    no value, since they take none (Typer would show ``<bool>``), arguments by their metavar."""
    for param in params:
        if isinstance(param, TyperArgument) and param.metavar is not None:
            param.__class__ = NamedArgument  # Typer builds its arguments itself: no option takes a class
        elif getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """Every cardioner command (``cli/__init__``): its options as ``readable`` shows them."""

    def get_params(self, ctx: typer.Context) -> list:
        return readable(super().get_params(ctx))


class Group(TyperGroup):
    """The ``cardioner`` command itself: ``--version`` and ``--help`` as ``readable`` shows them."""

    def get_params(self, ctx: typer.Context) -> list:
        return readable(super().get_params(ctx))


CORPUS_FORMATS = described("data.format", "corpus format", default="detected")

# The corpora, the backbone and the budget of a training run (train, compare).
ConfigFile = Annotated[Path | None, typer.Option("--config", metavar="FILE",
                                                             help="YAML config (sections data, model, "
                                                                  "training); options override it")]
TrainCorpus = Annotated[str | None, typer.Option(metavar="PATH",
                                                 help="training corpus (brat folder, CoNLL, JSONL, HF data)")]
DevCorpus = Annotated[str | None, typer.Option(metavar="PATH",
                                               help="dev corpus: model selection and early stopping")]
CorpusFormat = Annotated[str | None, typer.Option(metavar="FORMAT", help=CORPUS_FORMATS)]
Backbone = Annotated[str | None, typer.Option(metavar="NAME_OR_PATH", help=described(
    "model.model", "backbone: a Hugging Face name or a local folder",
    default="'default', the bundled all-MiniLM-L6-v2"))]
Epochs = Annotated[int | None, typer.Option(metavar="N", help=described("training.epochs", "maximum epochs"))]
TrainBatchSize = Annotated[int | None, typer.Option(metavar="N", help=described(
    "training.batch_size", "windows per batch, all processes together (under torchrun / accelerate launch, "
                           "split between them)"))]
LearningRate = Annotated[float | None, typer.Option(metavar="RATE", help=described(
    "training.lr", f"backbone learning rate; the head learns at {HEAD_LR_FACTOR}x and a CRF at "
                   f"{CRF_LR_FACTOR}x it unless --set training.head_lr / training.crf_lr say otherwise"))]
MaxLength = Annotated[int | None, typer.Option(metavar="N", help=described(
    "data.max_length", "window size in subwords", default="the backbone's limit, at most 512"))]
Stride = Annotated[int | None, typer.Option(metavar="N", help=described(
    "data.stride", "window overlap in subwords", default="a quarter of the window"))]
Seed = Annotated[int | None, typer.Option(metavar="N", help=described("training.seed", "random seed"))]
# The model's settings: help and choices from their one declaration (cardioner.modeling.HEAD_SETTINGS).
Head = Annotated[str | None, typer.Option(metavar="HEAD",
                                          help=described("model.head", HEAD_SETTINGS["head"].help))]
Crf = Annotated[bool | None, typer.Option("--crf/--no-crf", help=described("model.use_crf",
                                                                           HEAD_SETTINGS["use_crf"].help))]
Sets = Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                         help="any config key, with its section; repeatable: "
                                                              "--set training.lr=3e-5")]

# An export applied to documents (predict, evaluate, analyze).
ModelDir = Annotated[str, typer.Option(metavar="DIR", help="exported model folder")]
AnnotatedCorpus = Annotated[str, typer.Option(metavar="PATH",
                                              help="annotated corpus (brat folder, CoNLL, JSONL, HF data)")]
BatchSize = Annotated[int, typer.Option(metavar="N", help="windows per batch")]
ExportMaxLength = Annotated[int | None, typer.Option(metavar="N",
                                                     help="window size in subwords (default: as trained)")]
ExportStride = Annotated[int | None, typer.Option(metavar="N",
                                                  help="window overlap in subwords (default: as trained)")]
Dtype = Annotated[str, typer.Option(metavar="DTYPE",
                                    help="compute dtype: auto (bfloat16 where the CPU/GPU runs it natively, "
                                         "else float32) | float32 | bfloat16")]
Quantize = Annotated[str, typer.Option(metavar="MODE",
                                       help="none | int8 (linear layers dynamically quantised; CPU)")]
SpanErrors = Annotated[
    str,
    typer.Option(
        "--span-errors",
        metavar="RULE",
        help="spans whose offsets do not fit their annotated "
        "string: error | skip | realign (data.span_errors)",
    ),
]

Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", help="log debug messages, and the libraries' notes hidden otherwise (model load "
                            "reports, Optuna's warnings); CARDIONER_DEBUG=1 also shows tracebacks")]
