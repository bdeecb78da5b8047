"""The training configuration: typed, frozen sections, loaded from YAML with command-line overrides.

Every setting lives here with its default and a comment; nothing is hidden in the trainer. A YAML file has
the sections ``data``, ``model`` and ``training``; command-line options override it by dotted key
(``training.lr=3e-5``). Unknown keys are rejected with the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cardioner.errors import ConfigError
from cardioner.modeling import HEAD_SETTINGS, HeadSetting
from cardioner.values import InvalidValue, as_float, as_int, loads_json


@dataclass(frozen=True)
class DataConfig:
    train: str | None = None  # training corpus: brat folder, CoNLL file, JSONL, HF dataset folder
    dev: str | None = None  # development corpus (model selection, early stopping, thresholds)
    test: str | None = None  # test corpus: scored once, after training; never used for selection
    format: str | None = None  # brat | conll | jsonl | hf | tsv; None = auto-detect
    multilabel: bool = False  # one BIO channel per entity type (overlapping entities of different types)
    overlaps: str = "error"  # flat task with overlapping gold
    #   spans: "error" or "longest" (keep longest, count dropped)
    span_errors: str = "error"  # a span whose offsets do not fit its annotated
    #   string: error | skip (leave it out, counted) | realign (moved to the nearest
    #   occurrence of its string within a few characters, each move reported)
    scheme: str = "BIO"  # tag scheme on words: BIO (IOB2) or BIOES
    max_length: int | None = None  # window size in subwords,
    #   special tokens included; None = backbone limit (<= 512)
    stride: int | None = None  # overlap between consecutive
    #   windows, in subwords; None = a quarter of the window
    context: int = 0  # subwords of unlabelled context on each side of a window's own words (one
    #   line each): the neighbouring text of the document, then of its group (consecutive documents with
    #   the same meta "document", e.g. a JSONL "document" key); 0 = none (windows overlap by data.stride
    #   instead; the default, by measurement: docs/benchmarks.md "Document context"); 2 x context < max_length
    label_all_subwords: bool = False  # label continuation subwords too (I- of their word) instead of -100
    dev_fraction: float = 0.0  # carve a dev set from train (by document, seeded) when no dev corpus is given


def _head_setting_type(setting: HeadSetting) -> Any:
    """The field type of a head setting (a ``tuple`` setting holds positive ints)."""
    return tuple[int, ...] if setting.type is tuple else setting.type


@dataclass(frozen=True)
class BackboneConfig:
    model: str = "default"  # backbone: a hub name or a local path; "default" = the bundled all-MiniLM-L6-v2


# The settings of the model itself are declared once, in cardioner.modeling.HEAD_SETTINGS
# (name, type, default, help, choices, bounds): one field each here, of that name, type
# and default, after the backbone. The model's config takes the same names as keyword
# arguments (``training.build.build_model`` passes them on as they are).
HeadConfig = dataclasses.make_dataclass(
    "HeadConfig",
    [
        (name, _head_setting_type(setting), field(default=setting.default))
        for name, setting in HEAD_SETTINGS.items()
    ],
    bases=(BackboneConfig,),
    frozen=True,
)
HeadConfig.__module__ = __name__
HeadConfig.__doc__ = "The backbone, and one field per row of cardioner.modeling.HEAD_SETTINGS."


@dataclass(frozen=True)
class ModelConfig(HeadConfig):
    """The model section: the backbone, the model's settings (HeadConfig: head, use_crf, classifier_dropout,
    ...), then what training makes of the model's outputs (priors, class weights, thresholds)."""

    prior_init: bool = True  # a fresh head's output biases start at the training tag frequencies (else at 0)
    class_weighting: str = "none"  # class weights in the softmax loss (multi-label sigmoid: the BCE, per
    #   type): none | inverse | inverse_sqrt | normalised
    threshold: float = 0.5  # multi-label sigmoid model: every type's decision threshold before any tuning
    type_thresholds: dict[str, float] | None = None  # multi-label sigmoid model: per-type thresholds
    #   overriding `threshold` (e.g. the fold average `train --folds` reports): "DISO=0.4,ANAT=0.35"
    threshold_selection: str = "dev"  # multi-label sigmoid model: "dev" tunes each type's threshold on dev
    #   (span F1) after training; "fixed" keeps `threshold`
    confidence_calibration: str = "dev"  # "dev" fits the confidence temperature on dev after training (span
    #   confidences then mean what they say; no span changes: `cardioner calibrate`); "none" keeps T = 1


#: training.head_lr and training.crf_lr when unset: these multiples of training.lr
HEAD_LR_FACTOR = 10
CRF_LR_FACTOR = 100


@dataclass(frozen=True)
class TrainingConfig:
    output: str | None = None  # export folder (written atomically)
    epochs: int = 3  # maximum number of epochs
    batch_size: int = 16  # windows per optimiser micro-batch, all processes together: under a launcher
    #   each of n processes takes 1/n of every batch (same steps and results as one process)
    eval_batch_size: int = 32  # windows per evaluation batch
    lr: float = 5e-5  # backbone learning rate
    head_lr: float | None = None  # head learning rate; None = HEAD_LR_FACTOR (10) x lr
    crf_lr: float | None = None  # CRF learning rate; None = CRF_LR_FACTOR (100) x lr (transitions move fast)
    layer_decay: float = 1.0  # layer-wise LR decay for the backbone (1.0 = off; 0.9 = each lower layer x0.9)
    weight_decay: float = 0.01  # AdamW/SGD weight decay (not on biases and norms)
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9  # SGD momentum
    scheduler: str = "linear"  # linear | cosine | constant | step | one_cycle (all with warm-up)
    warmup_ratio: float = 0.1  # fraction of optimiser steps used for linear warm-up
    step_size_epochs: int = 1  # for scheduler=step: decay every N epochs
    step_gamma: float = 0.5  # for scheduler=step: decay factor
    gradient_accumulation_steps: int = 1  # micro-batches per optimiser step
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    mixed_precision: str = "no"  # no | fp16 | bf16 (Accelerate)
    seed: int = 42  # one seed for everything (data order, dropout, init)
    metric: str = "f1"  # dev metric for model selection and early stopping (span micro F1)
    patience: int = 3  # early stopping: epochs without improvement > min_delta (0 = off)
    min_epochs: int = 1  # early stopping never stops before this many epochs
    min_delta: float = 0.0  # smallest improvement that counts
    group_by_length: bool = True  # length-grouped batches (dynamic padding wastes less)
    checkpoint_steps: int = 0  # save an Accelerate checkpoint every N optimiser steps (0 = each epoch)
    resume: bool = False  # resume from the last checkpoint in
    #   <output>.checkpoints (same settings); else it is emptied
    log_with: str | None = None  # Accelerate tracker: tensorboard | wandb | mlflow
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit; for smoke runs)
    unfreeze_at_epoch: int = 0  # train only the head (and
    #   CRF) for the first N epochs, then everything (0 = off)
    gradual_unfreezing: str | None = None  # "EPOCH:LAYERS,...", e.g. "1:2,2:4,3:all":
    #   after EPOCH epochs the top LAYERS backbone layers train ("all": embeddings
    #   too); frozen before the first stage; LRs from lr/layer_decay
    cache_features: bool = True  # with model.freeze_backbone:
    #   run the backbone once per window, train on the cache
    feature_cache_dir: str | None = None  # keep cached features as safetensors files here, reused across runs
    #   (None = in memory, recomputed each run)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return {f.name: _plain(dataclasses.asdict(getattr(self, f.name))) for f in fields(self)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def replace(self, **dotted: Any) -> Config:
        """A copy with dotted keys replaced, e.g. ``config.replace(**{"training.lr": 1e-4})``."""
        return apply_overrides(self, dotted)

    def get(self, key: str) -> Any:
        """The value of a dotted (or unambiguous short) key, e.g. ``config.get("training.lr")``."""
        section, name = resolve_key(key).split(".")
        return getattr(getattr(self, section), name)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig}
CHOICES: dict[str, tuple[str, ...]] = {
    "data.format": ("brat", "conll", "jsonl", "hf", "tsv"),
    "data.overlaps": ("error", "longest"),
    "data.span_errors": ("error", "skip", "realign"),
    "data.scheme": ("BIO", "BIOES"),
    **{f"model.{name}": setting.choices for name, setting in HEAD_SETTINGS.items() if setting.choices},
    "model.class_weighting": ("none", "inverse", "inverse_sqrt", "normalised"),
    "model.threshold_selection": ("fixed", "dev"),
    "model.confidence_calibration": ("none", "dev"),
    "training.optimizer": ("adamw", "adam", "sgd"),
    "training.scheduler": ("linear", "cosine", "constant", "step", "one_cycle"),
    "training.mixed_precision": ("no", "fp16", "bf16"),
    "training.log_with": ("tensorboard", "wandb", "mlflow"),
    "training.metric": ("f1", "precision", "recall", "overlap_f1", "macro_f1"),
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def all_keys() -> list[str]:
    return [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in fields(cls)]


def default_of(key: str) -> Any:
    """The default of the dotted config ``key`` (``"training.epochs"`` -> 3), from its field."""
    section, name = resolve_key(key).split(".")
    (declared,) = [f for f in fields(SECTIONS[section]) if f.name == name]
    return declared.default_factory() if declared.default is dataclasses.MISSING else declared.default


# Names users bring from other tools; only used to suggest the right key, never accepted silently.
_ALIASES = {
    "learning_rate": "training.lr",
    "num_train_epochs": "training.epochs",
    "num_epochs": "training.epochs",
    "per_device_train_batch_size": "training.batch_size",
    "crf": "model.use_crf",
    "backbone": "model.model",
    "model_name_or_path": "model.model",
    "dropout": "model.classifier_dropout",
    "warmup": "training.warmup_ratio",
    "fp16": "training.mixed_precision",
    "output_dir": "training.output",
    "max_seq_length": "data.max_length",
}


def _nearest(key: str, candidates: list[str]) -> str | None:
    """The valid key ``key`` was probably meant to be (an alias, or a close spelling), or None."""
    if key.split(".")[-1] in _ALIASES:
        return _ALIASES[key.split(".")[-1]]
    # compared without the section: "training." matches a lot
    short = {c.split(".")[-1]: c for c in candidates}
    match = difflib.get_close_matches(key.split(".")[-1], list(short), n=1, cutoff=0.6)
    return short[match[0]] if match else None


def resolve_key(key: str, source: str = "config", dotted: bool = False) -> str:
    """Map ``lr`` or ``training.lr`` to its dotted key; unknown keys raise ConfigError with the nearest key,
    if any. With ``dotted``, a key without its section is refused too (naming the dotted key it would be):
    on a command line ``--set layer_decay=0.9`` would otherwise be applied to a section the user never
    named."""
    keys = all_keys()
    if key in keys:
        return key
    matches = [k for k in keys if k.split(".", 1)[1] == key]
    if len(matches) == 1 and not dotted:
        return matches[0]
    if matches:
        raise ConfigError(f"{source}: {key!r} needs its section: "
                          + " or ".join(repr(match) for match in matches))
    section = key.split(".", 1)[0] if "." in key else None
    if section is not None and section not in SECTIONS:
        close = difflib.get_close_matches(section, list(SECTIONS), n=1, cutoff=0.6)
        if close:
            raise ConfigError(f"{source}: unknown section {section!r} in {key!r}; did you mean "
                              f"{close[0] + '.' + key.split('.', 1)[1]!r}?")
    nearest = _nearest(key, keys)
    raise ConfigError(f"{source}: unknown key {key!r}" + (f"; did you mean {nearest!r}?" if nearest else ""))


def coerce_value(key: str, value: Any, source: str = "config") -> Any:
    """``value`` checked and converted to the type of the dotted config ``key``, as a config file's value is
    (``"512,256"`` or ``[512, 256]`` -> ``(512, 256)``, ``"true"`` -> ``True``); a ConfigError naming the key
    and the value when the key cannot take it."""
    key = resolve_key(key, source)
    section, name = key.split(".")
    return _coerce(value, typing.get_type_hints(SECTIONS[section])[name], key, source)


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Check and convert one value to its field's type; raise ConfigError naming the key and the value.

    Numbers go through ``cardioner.values`` (finite, integers never rounded,
    no booleans, bounded, ASCII text); booleans are true/false (or yes/no,
    1/0); text is parsed by the same rules, since a command-line value is.
    """
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        hint = options[0]
        origin = typing.get_origin(hint)
    elif value is None:
        raise ConfigError(
            f"{source}: {key} cannot be null; give it a value or leave the key out for its default"
        )
    try:
        if origin is dict:
            if isinstance(value, str):  # "DISO=0.4,ANAT=0.35" or a YAML/JSON mapping
                text = value.strip()
                value = _load_yaml_text(text, source) if text.startswith("{") else dict(
                    item.split("=", 1) for item in text.split(",") if item.strip())
            if not isinstance(value, dict):
                raise InvalidValue(f"must be a mapping TYPE=VALUE,..., got {value!r:.80}")
            return {str(k).strip(): as_float(v) for k, v in value.items()}
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise InvalidValue(f"must be a list of integers, got {value!r:.80}")
            return tuple(as_int(v, whole_floats=True) for v in value)
        if hint is bool:
            if isinstance(value, str) and value.strip().lower() in _BOOLEAN_TEXT:
                return _BOOLEAN_TEXT[value.strip().lower()]
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise InvalidValue(f"must be true or false, got {value!r:.80}")
        if hint is int:
            return as_int(value, whole_floats=True)
        if hint is float:
            return as_float(value)
        if hint is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise InvalidValue(f"must be text, got {type(value).__name__} {value!r:.80}")
            return str(value)
    except InvalidValue as error:
        raise ConfigError(f"{source}: {key} {error}") from None
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {key} must be {getattr(hint, '__name__', hint)}, got {value!r:.80}"
        ) from None
    return value


_BOOLEAN_TEXT = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}

# : the values each numeric key may take: (lowest, highest; None = unbounded, whether each bound itself is
# allowed). : Head settings take theirs from HEAD_SETTINGS (``low <= value < high``).
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.max_length": (8, None, True, True),
    "data.stride": (0, None, True, True),
    "data.context": (0, None, True, True),
    "data.dev_fraction": (0.0, 1.0, True, False),
    **{f"model.{name}": (*setting.bounds, True, False) for name, setting in HEAD_SETTINGS.items()
       if setting.bounds},
    "model.threshold": (0.0, 1.0, False, False),
    **{f"training.{name}": (1, None, True, True) for name in (
        "epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps", "step_size_epochs")},
    **{f"training.{name}": (0, None, True, True) for name in (
        "patience", "min_epochs", "checkpoint_steps", "max_steps", "unfreeze_at_epoch", "weight_decay",
        "max_grad_norm", "min_delta")},
    **{f"training.{name}": (0.0, None, False, True) for name in ("lr", "head_lr", "crf_lr", "step_gamma")},
    "training.layer_decay": (0.0, 1.0, False, True),
    "training.momentum": (0.0, 1.0, True, False),
    "training.warmup_ratio": (0.0, 1.0, True, False),
    "training.seed": (0, 2**32 - 1, True, True),  # what numpy's seed takes
}


def _range_text(low: float | None, high: float | None, low_in: bool, high_in: bool) -> str:
    def shown(bound: float) -> str:
        return str(int(bound)) if float(bound).is_integer() and abs(bound) >= 1 else f"{bound:g}"

    if high is None:
        return f"{'>=' if low_in else '>'} {shown(low)}"
    return f"in {'[' if low_in else '('}{shown(low)}, {shown(high)}{']' if high_in else ')'}"


def _in_range(value: float, low: float | None, high: float | None, low_in: bool, high_in: bool) -> bool:
    above = low is None or value > low or (low_in and value == low)
    below = high is None or value < high or (high_in and value == high)
    return above and below


def _validate(config: Config, source: str) -> None:
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is not None and value not in choices:
            raise ConfigError(f"{source}: {key} must be one of {', '.join(choices)}; got {value!r}")
    for key, bounds in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is not None and not _in_range(value, *bounds):
            raise ConfigError(f"{source}: {key} must be {_range_text(*bounds)}, got {value!r}")
    data, training = config.data, config.training
    if data.max_length is not None and data.stride is not None and data.stride >= data.max_length:
        raise ConfigError(
            f"{source}: data.stride ({data.stride}) must be smaller than data.max_length ({data.max_length})"
        )
    if data.max_length is not None and 2 * data.context >= data.max_length:
        raise ConfigError(f"{source}: data.context ({data.context}) must leave room for a window's own"
                          f" words: twice it must be smaller than data.max_length ({data.max_length})")
    for entity_type, value in (config.model.type_thresholds or {}).items():
        if not 0.0 < value < 1.0:
            raise ConfigError(
                f"{source}: model.type_thresholds[{entity_type!r}] must be in (0, 1), got {value}"
            )
    if training.gradual_unfreezing is not None:
        parse_unfreezing(training.gradual_unfreezing, source)
    scheduled = [
        f"training.{name}" for name in ("unfreeze_at_epoch", "gradual_unfreezing") if getattr(training, name)
    ]
    if len(scheduled) == 2 or (scheduled and config.model.freeze_backbone):
        clash = scheduled + (["model.freeze_backbone"] if config.model.freeze_backbone else [])
        raise ConfigError(f"{source}: {' and '.join(clash)} are set together; choose one freezing strategy "
                          "(freeze_backbone keeps the backbone frozen for the whole run)")


def parse_unfreezing(schedule: str, source: str = "config") -> list[tuple[int, int | None]]:
    """Parse ``training.gradual_unfreezing``: "1:2,2:4,3:all" -> [(1, 2), (2, 4), (3, None)].

    Each stage is (epochs completed, number of top backbone layers that train from then on; None = all,
    embeddings included). Epochs must increase and layer counts must not shrink.
    """
    stages: list[tuple[int, int | None]] = []
    cleaned = str(schedule).translate(str.maketrans("", "", "{}[]()'\" "))
    for item in filter(None, cleaned.split(",")):
        epoch, _, layers = item.partition(":")
        try:
            stage = (int(epoch), None if layers.lower() == "all" else int(layers))
        except ValueError:
            raise ConfigError(f"{source}: training.gradual_unfreezing stage {item!r} is not EPOCH:LAYERS "
                              f"(e.g. \"1:2,2:4,3:all\"); got {schedule!r}") from None
        if stage[0] < 0 or (stage[1] is not None and stage[1] < 1):
            raise ConfigError(
                f"{source}: training.gradual_unfreezing stage {item!r} needs EPOCH >= 0 and LAYERS >= 1"
            )
        if stages and (stage[0] <= stages[-1][0] or stages[-1][1] is None
                       or (stage[1] is not None and stage[1] < stages[-1][1])):
            raise ConfigError(f"{source}: training.gradual_unfreezing stages must have increasing epochs and "
                              f"non-decreasing layers; got {schedule!r}")
        stages.append(stage)
    if not stages:
        raise ConfigError(f"{source}: training.gradual_unfreezing is empty; expected e.g. \"1:2,2:4,3:all\"")
    return stages


def apply_overrides(
    config: Config, overrides: dict[str, Any], source: str = "command line", skip_none: bool = False
) -> Config:
    """Return ``config`` with dotted (or unambiguous short) keys replaced.

    A None value sets the key to None (a ConfigError for a key that does not take None), unless ``skip_none``:
    then it means "not given" (a command-line option left unset) and the key keeps its value.
    """
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
    for raw_key, value in overrides.items():
        if value is None and skip_none:
            continue
        key = resolve_key(raw_key, source)
        section, name = key.split(".")
        annotation = typing.get_type_hints(SECTIONS[section])[name]
        sections[section][name] = _coerce(value, annotation, key, source)
    new = Config(**{name: SECTIONS[name](**values) for name, values in sections.items()})
    _validate(new, source)
    return new


# : aliases (``*name``) a configuration file may use: a few keep a file short; more can make a small file
# expand : into gigabytes ("billion laughs")
MAX_YAML_ALIASES = 16


class _TooManyAliases(Exception):
    def __init__(self, line: int):
        self.line = line


class _RepeatedKey(Exception):
    def __init__(self, key: str, first: int, line: int):
        self.key, self.first, self.line = key, first, line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing more than MAX_YAML_ALIASES aliases (merge keys ``<<: *x`` count too) and
    a key written twice in one mapping (PyYAML keeps the last value and drops the other silently)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.num_aliases = getattr(self, "num_aliases", 0) + 1
            if self.num_aliases > MAX_YAML_ALIASES:
                raise _TooManyAliases(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        lines: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:  # the keys as written (a merge key's values may be overridden)
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line, key = key_node.start_mark.line + 1, (key_node.tag, key_node.value)
                if key in lines:
                    raise _RepeatedKey(key_node.value, lines[key], line)
                lines[key] = line
        return super().construct_mapping(node, deep)


def _load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML with the bounded loader; every failure is a ConfigError naming ``source`` (and the line)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: builds plain data only
    except _TooManyAliases as error:
        raise ConfigError(
            f"{source}:{error.line}: more than {MAX_YAML_ALIASES} YAML aliases (*name); write the "
            "values out"
        ) from None
    except _RepeatedKey as error:
        raise ConfigError(
            f"{source}:{error.line}: key {error.key!r} is given twice (lines {error.first} and "
            f"{error.line}); YAML would keep the last value and drop the other silently: keep one"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not a configuration: nested too deeply") from None
    except ValueError as error:  # PyYAML converts a 5,000-digit integer with int(), which refuses it
        raise ConfigError(f"{source}: not a configuration: a number too long to be a setting "
                          f"({str(error).split(':')[0]})") from None


def read_config_file(path: str | Path) -> dict:
    """The mapping in a YAML (or ``.json``) configuration file; ConfigError naming the file for anything else.

    Aliases are bounded (MAX_YAML_ALIASES); JSON numbers follow ``cardioner.values`` (no Infinity/NaN, no
    integers beyond 2**63).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as error:  # a folder, a name too long, no permission
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte offset {error.start})") from None
    if path.suffix == ".json":
        try:
            raw = loads_json(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
        except InvalidValue as error:
            raise ConfigError(f"{path}: {error}") from None
    else:
        raw = _load_yaml_text(text, str(path))
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping with sections data/model/training, got {type(raw).__name__}"
        )
    return raw


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML (or JSON) config file, then apply overrides (dotted keys), then validate.

    Args:
        path: YAML file with sections data/model/training (flat keys are accepted when unambiguous).
        overrides: dotted keys -> values, e.g. from the command
            line; None values (options left unset) are skipped.

    Returns:
        The resolved, frozen Config.
    """
    flat: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        raw = read_config_file(path)
        for key, value in raw.items():
            if key == "search":
                continue  # the search space of `cardioner tune`; training ignores it
            if (key not in SECTIONS and isinstance(value, dict)
                    and not any(known.endswith("." + key) for known in all_keys())):
                close = difflib.get_close_matches(key, list(SECTIONS), n=1, cutoff=0.6)
                raise ConfigError(f"{path}: unknown section {key!r}"
                                  + (f"; did you mean {close[0]!r}?" if close else
                                     f"; the sections are {', '.join(SECTIONS)} (and search)"))
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: section {key!r} must be a mapping, got {value!r:.80}")
                for name, inner in value.items():
                    flat[resolve_key(f"{key}.{name}", source)] = inner
            else:
                flat[resolve_key(key, source)] = value
    config = apply_overrides(Config(), flat, source)
    return apply_overrides(config, overrides or {}, skip_none=True)


#: the keys that hold paths of files or folders (``model.model`` may hold one: a local backbone folder)
PATH_KEYS = ("data.train", "data.dev", "data.test", "training.output", "training.feature_cache_dir")


def absolute_paths(config: Config) -> Config:
    """``config`` with every path made absolute (from the current folder), so that a config written into an
    output folder (``best_config.yaml``) runs from any folder; ``model.model`` too when it names an existing
    local folder (else it is a Hub name)."""
    paths = {key: str(Path(value).absolute()) for key in PATH_KEYS if (value := config.get(key)) is not None}
    if Path(config.model.model).exists():
        paths["model.model"] = str(Path(config.model.model).absolute())
    return config.replace(**paths)


def config_from_dict(raw: dict) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a saved training_config.yaml)."""
    flat = {f"{section}.{k}": v for section, values in raw.items() for k, v in (values or {}).items()}
    return apply_overrides(Config(), flat, "saved config")
