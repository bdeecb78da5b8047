"""Export a trained model as an ordinary Hugging Face folder, and load one back with cardioner's own classes.

The folder (DESIGN.md §5) loads anywhere with ``AutoModelForTokenClassification.from_pretrained(path,
trust_remote_code=True)``: config.json carries the backbone config and an ``auto_map`` onto the byte-identical
copy of ``cardioner/modeling.py`` saved next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from importlib import metadata
from pathlib import Path

import yaml
from transformers import AutoTokenizer

from cardioner import __version__, hub, modeling
from cardioner.backbone import base_model_name
from cardioner.config import Config
from cardioner.data.paths import check_output, staged_output
from cardioner.errors import ConfigError, CorpusError
from cardioner.evaluation import format_table
from cardioner.labels import LabelSet
from cardioner.values import counted

MODELING_FILE = "modeling.py"
EXPORT = "a cardioner export"


def modeling_source() -> bytes:
    """The bytes of the installed cardioner/modeling.py (what every export carries)."""
    return Path(modeling.__file__).read_bytes()


def cardioner_version() -> str:
    try:
        return metadata.version("cardioner")
    except metadata.PackageNotFoundError:  # running from a source tree
        return __version__


def save_model(
    model: modeling.CardioNERPreTrainedModel,
    tokenizer,
    output_dir: str | Path,
    training_config: dict | None = None,
    metrics: dict | None = None,
    card: dict | None = None,
    extra_files=None,
) -> Path:
    """Write an export folder; it appears at ``output_dir`` only once complete (an old one is replaced then).

    Crash-safe (``cardioner.data.paths``): the folder is written into a marked staging folder beside
    ``output_dir`` and swapped in with one rename-exchange, so a kill at any moment leaves the old or the new
    complete export at ``output_dir``; the next save removes what a killed one left behind.

    Args:
        model: a cardioner model (TokenClassificationModel, TokenClassificationModelCRF, ...).
        tokenizer: its fast tokenizer.
        output_dir: the folder to create or replace.
        training_config: the resolved training configuration (written to training_config.yaml).
        metrics: dev/test scores (written to metrics.json and summarised in the model card).
        card: extra model-card fields: "title", "description", "data", "citation", "base_model", "language".
        extra_files: optional callable(folder) that writes more
            files (plots, history) into the staging folder.

    Returns:
        the folder.
    """
    if not isinstance(model, modeling.CardioNERPreTrainedModel):
        raise TypeError(f"save_model expects a cardioner model, got {type(model).__name__}")
    output_dir = Path(output_dir)
    check_export_target(output_dir)
    source = modeling_source()
    config = model.config
    config.auto_map = {
        "AutoConfig": "modeling.CardioNERConfig",
        "AutoModelForTokenClassification": f"modeling.{type(model).__name__}",
    }
    config.cardioner_version = cardioner_version()
    config.modeling_sha256 = hashlib.sha256(source).hexdigest()

    with staged_output(output_dir, "folder", is_export, EXPORT) as staging:
        tokenizer.save_pretrained(staging)
        # transformers 4.x's pipeline loads a tokenizer for an unknown config class (ours) only when the
        # config names one: without it, pipeline(model=folder) fails
        config.tokenizer_class = name_portable_tokenizer_class(staging)
        model.save_pretrained(staging, safe_serialization=True)
        (staging / MODELING_FILE).write_bytes(source)
        (staging / "training_config.yaml").write_text(
            yaml.safe_dump(training_config or {}, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        (staging / "metrics.json").write_text(
            json.dumps(metrics or {}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (staging / "README.md").write_text(model_card(model, metrics or {}, card or {}), encoding="utf-8")
        if extra_files is not None:
            extra_files(staging)
    return output_dir


def name_portable_tokenizer_class(folder: Path) -> str | None:
    """Name a class every transformers release has where transformers 5 wrote one that 4.x lacks; return
    the tokenizer's class as the folder names it (None without a tokenizer_config.json).

    A tokenizer built from a ``tokenizers`` object is saved by transformers 5 as ``TokenizersBackend``, which
    transformers 4.5x cannot resolve; ``PreTrainedTokenizerFast`` reads the same tokenizer.json on both.
    Tokenizers of real backbones (BertTokenizer, XLMRobertaTokenizer, ...) keep their own class.
    """
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return None
    settings = json.loads(path.read_text(encoding="utf-8"))
    if settings.get("tokenizer_class") == "TokenizersBackend":
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return settings.get("tokenizer_class")


def supports_temperature(model_dir: str | Path) -> bool:
    """Whether the export's own modeling.py (what ``trust_remote_code`` runs) reads
    ``confidence_temperature``; exports from before it would load a temperature and ignore it."""
    copied = Path(model_dir) / MODELING_FILE
    return copied.is_file() and b"confidence_temperature" in copied.read_bytes()


def update_export(model_dir: str | Path, config_changes: dict, update_modeling: bool = False,
                  metrics_changes: dict | None = None) -> Path:
    """Change keys of an export's config.json and metrics.json (and, with ``update_modeling``, replace its
    modeling.py with the installed one), crash-safely: the folder is copied into a marked staging folder
    beside it, changed there and swapped in whole (``save_model``'s ``staged_output``), so a kill at any
    moment leaves the old or the new export, never a mix (both files changed or neither); what a killed update
    left behind is removed by the next one.

    Args:
        model_dir: an export folder (refused otherwise: nothing else is ever touched).
        config_changes: {config.json key: JSON value}.
        update_modeling: also write the installed modeling.py and its sha256 (the weights load into it when
            ``load_model`` loads them: same parameter names).
        metrics_changes: {metrics.json key: JSON value} (a metrics.json is created if the export has none).

    Returns:
        the folder.
    """
    model_dir = Path(model_dir)
    check_export_target(model_dir)
    if not is_export(model_dir):
        raise CorpusError(f"not {EXPORT} (no config.json with model_type "
                          f"{modeling.CardioNERConfig.model_type!r})", model_dir)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(config_changes)
    metrics = None
    if metrics_changes:
        metrics_path = model_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CorpusError(f"not JSON ({error}); an update changes keys of a readable metrics.json only",
                              metrics_path) from None
        if not isinstance(metrics, dict):
            raise CorpusError(f"holds a JSON {type(metrics).__name__}, not an object of scores", metrics_path)
        metrics.update(metrics_changes)
    source = modeling_source()
    if update_modeling:
        config["modeling_sha256"] = hashlib.sha256(source).hexdigest()
        config["cardioner_version"] = cardioner_version()
    with staged_output(model_dir, "folder", is_export, EXPORT) as staging:
        for entry in sorted(model_dir.iterdir()):
            if entry.is_symlink():
                raise CorpusError("the export holds a link; an update copies plain files and folders only",
                                  entry)
            if entry.is_dir():
                shutil.copytree(entry, staging / entry.name)
            else:
                shutil.copy2(entry, staging / entry.name)
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                             encoding="utf-8")
        if metrics is not None:
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
        if update_modeling:
            (staging / MODELING_FILE).write_bytes(source)
    return model_dir


def is_export(folder: str | Path) -> bool:
    """Whether ``folder`` holds a cardioner export (a config.json with model_type "cardioner")."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and config.get("model_type") == modeling.CardioNERConfig.model_type


def check_outside_exports(output: str | Path) -> None:
    """Raise CorpusError when ``output`` (a file or folder a command writes) lies inside an export folder: the
    next export there replaces the folder whole, and ``cardioner push`` would upload it with the model."""
    for folder in Path(os.path.realpath(output)).parents:
        if is_export(folder):
            raise CorpusError(f"lies inside the model folder {folder}: the next export there replaces that "
                              "folder whole, and pushing the model would upload it too; choose an output "
                              "outside it", output)


def check_export_target(output_dir: str | Path) -> None:
    """Raise CorpusError unless ``output_dir`` is new, an
    empty folder or an earlier export (not a link either).

    An export replaces the folder as a whole, so any other folder (a corpus, a project) is refused and left as
    it is; so is the folder the process stands in.
    """
    output_dir = Path(output_dir)
    if Path.cwd().resolve().is_relative_to(output_dir.resolve()):
        raise CorpusError("the output is the current folder or holds it, and an export replaces the whole "
                          "folder; choose a subfolder", output_dir)
    check_output(output_dir, "folder", is_export, EXPORT)


#: the weights of an export: one safetensors file, or the index of its shards (a large model's)
EXPORT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def load_model(path: str | Path):
    """Load an export with the installed cardioner classes; no code from the folder is executed.

    Warns when the folder's modeling.py differs from the installed one (the weights still load when the
    parameter names match).

    Args:
        path: an export folder written by ``save_model``.

    Returns:
        (model in eval mode, tokenizer).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}: not a model folder")
    config = modeling.CardioNERConfig.from_pretrained(path)
    installed = hashlib.sha256(modeling_source()).hexdigest()
    saved = getattr(config, "modeling_sha256", None)
    copied = path / MODELING_FILE
    folder_sha = hashlib.sha256(copied.read_bytes()).hexdigest() if copied.is_file() else None
    if folder_sha is not None and saved is not None and folder_sha != saved:
        warnings.warn(
            f"{copied} does not match the sha256 in its config.json (edited after export?)", stacklevel=2
        )
    if (folder_sha or saved) != installed:
        warnings.warn(
            f"{path} was exported with another modeling.py (cardioner"
            f" {getattr(config, 'cardioner_version', '?')}); loading it with the installed classes",
            stacklevel=2,
        )
    for files, what in (EXPORT_WEIGHTS, "its weights"), (("tokenizer.json",), "its tokenizer"):
        if not any((path / name).is_file() for name in files):  # else transformers' message names neither
            raise ConfigError(f"{path}: the export has no {files[0]} ({what}); copy the whole export folder")
    model_class = _model_class(config)
    model, info = model_class.from_pretrained(path, config=config, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"{path}: weights missing for {len(missing)} parameters, e.g. {missing[:5]}")
    tokenizer = AutoTokenizer.from_pretrained(path, config=config)  # given the config, no code is looked up
    return model.eval(), tokenizer


def _model_class(config: modeling.CardioNERConfig) -> type[modeling.CardioNERPreTrainedModel]:
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        candidate = getattr(modeling, name, None)
        if isinstance(candidate, type) and issubclass(candidate, modeling.CardioNERPreTrainedModel):
            return candidate
    if names:
        raise ValueError(f"unknown cardioner architecture {names}; this cardioner is {cardioner_version()}")
    return modeling.model_class_for(config)


def card_fields(config: Config, labels: LabelSet, max_length: int, stride: int,
                corpus_sizes: dict[str, int]) -> dict:
    """The model card's fields of a training run: base model, data and a one-line description.

    Args:
        config: the run's Config (corpus paths, backbone).
        labels: its label set.
        max_length, stride: its windows.
        corpus_sizes: documents per corpus ("train", "dev", "test") it was given.
    """
    base = base_model_name(config.model.model)
    splits, sources = [], {}
    for name, path in (("train", config.data.train), ("dev", config.data.dev), ("test", config.data.test)):
        size = corpus_sizes.get(name)
        documents = counted(size, "document") if size else None
        if isinstance(path, (str, Path)):  # named by folder, never by this machine's absolute path
            splits.append(f"{name}: `{hub.data_name(path)}`" + (f" ({documents})" if documents else ""))
            sources[name] = hub.dataset_name(path)
        elif documents:
            splits.append(f"{name}: {documents}")
    kind = labels.describe()
    return {
        "base_model": base,
        "datasets": list(dict.fromkeys(sources.values())),  # the training corpus first
        "data": (
            ("; ".join(splits) + ". " if splits else "")
            + f"Task: {kind}, {counted(len(labels.types), 'entity type')}, windows of {max_length} subwords"
            f" with stride {stride}."
        ),
        "description": (
            f"A {kind} named-entity recogniser ({', '.join(labels.types)}) trained with cardioner "
            f"on `{hub.hub_id(base) or Path(base).name}`."
        ),
    }


def model_card(model: modeling.CardioNERPreTrainedModel, metrics: dict, card: dict) -> str:
    """README.md of an export: labels, data, scores, how to load, how to cite."""
    config = model.config
    labels = [config.id2label[index] for index in range(config.num_labels)]
    entity_types = sorted({modeling.split_tag(label)[1] for label in labels} - {None})
    title = card.get("title", "cardioner token-classification model")
    given = card.get("base_model") or (config.backbone_config or {}).get("_name_or_path") or ""
    base_model = hub.hub_id(given) or ""  # a Hub id; a local backbone is named by its folder, not its path
    backbone = base_model or (f"local folder {Path(given).name}" if given else "")
    backbone_type = (config.backbone_config or {}).get("model_type", "?")
    front = hub.front_matter(entity_types, metrics, {**card, "base_model": base_model})
    decoder = "CRF (Viterbi decoding)" if config.use_crf else "softmax"
    constrained = not config.use_crf and getattr(config, "constrained_decoding", False)
    channel_types = getattr(config, "channel_types", None)
    if channel_types:
        thresholds = config.thresholds or [0.5] * len(channel_types)
        decoder = ("multi-label: one CRF per entity type (Viterbi decoding in each)" if config.use_crf else
                   "multi-label: sigmoid per entity type, thresholds "
                   + ", ".join(f"{t} {v:g}" for t, v in zip(channel_types, thresholds, strict=True)))
    if not config.use_crf:
        decoder += (
            ", Viterbi over words under the tag scheme's constraints" if constrained else ", argmax per word"
        )
    lines = [
        *front,
        "",
        f"# {title}",
        "",
        card.get("description", "A named-entity recogniser trained with cardioner."),
        "",
        f"- backbone: `{backbone_type}`" + (f" ({backbone})" if backbone else ""),
        f"- head: `{config.head}`, decoder: {decoder}",
        f"- entity types: {', '.join(entity_types) if entity_types else '-'}",
        f"- labels: {', '.join(f'`{label}`' for label in labels)}",
        f"- cardioner {getattr(config, 'cardioner_version', '?')}",
        "",
    ]
    if card.get("data"):
        lines += ["## Data", "", str(card["data"]), ""]
    lines += ["## Scores", ""]
    lines += _metrics_table(metrics) if metrics else ["No scores were recorded.", ""]
    lines += [
        "## Usage",
        "",
        "With transformers only (no cardioner needed; the model code is `modeling.py` in this folder):",
        "",
        "```python",
        "from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline",
        "",
        'model = AutoModelForTokenClassification.from_pretrained("PATH", trust_remote_code=True)',
        'tokenizer = AutoTokenizer.from_pretrained("PATH", trust_remote_code=True)  # reads the config, too',
        (
            'ner = pipeline("token-classification", model=model, tokenizer=tokenizer,'
            ' aggregation_strategy="simple")'
        ),
        'ner("The patient was admitted with acute myocardial infarction.")',
        "```",
        "",
        "The pipeline returns whole words"
        + (
            ", decoded with the CRF (Viterbi path)"
            if config.use_crf
            else ", decoded by Viterbi under the tag scheme's constraints" if constrained else ""
        )
        + "; `model.decode(input_ids, attention_mask)` gives the tag ids per word, "
        "and `model(...).emissions` the raw head scores.",
        "Loading without `trust_remote_code=True` fails: the architecture is defined in `modeling.py`.",
        "",
        *(_multilabel_usage() if channel_types else []),
        "With cardioner (uses the installed classes, executes nothing from the folder):",
        "",
        "```python",
        "import cardioner",
        "",
        'model, tokenizer = cardioner.load_model("PATH")',
        "```",
        "",
        (
            "Long documents: the pipeline truncates at the backbone's limit; cardioner's `predict` cuts"
            " windows at word boundaries and merges them."
        ),
        "",
    ]
    if card.get("citation"):
        lines += ["## Citation", "", "```bibtex", str(card["citation"]).strip(), "```", ""]
    return "\n".join(lines)


def _multilabel_usage() -> list[str]:
    """Model-card lines: overlapping entities from plain transformers."""
    return [
        "### Overlapping entities",
        "",
        (
            "This model tags every entity type in its own channel, so entities of different types may"
            " overlap. The stock pipeline returns one label per token (the type whose tag is most confident),"
            " so it shows at most one of them. To get all of them, with character offsets:"
        ),
        "",
        "```python",
        'encoding = tokenizer(["..."], return_offsets_mapping=True, padding=True, return_tensors="pt")',
        'offsets = encoding.pop("offset_mapping")',
        "model.eval()",
        'spans = model.decode_spans(encoding["input_ids"], encoding["attention_mask"], offsets)',
        '# [[(start, end, "TYPE"), ...]] per text, overlaps included',
        "```",
        "",
        (
            "`model(**encoding).channel_logits` (batch, tokens, types, tags `O, B, I`) holds each type's"
            " decision at each word's first token (argmax over the last dimension); `model.decode(...)`"
            " gives, per word, one tag id per type (in the order of `config.channel_types`). The sigmoid"
            " model's per-type thresholds are `config.thresholds` (chosen on dev when trained with"
            " cardioner); set them there to change the trade-off."
        ),
        "",
    ]


def _metrics_table(metrics: dict) -> list[str]:
    """Span scores per split (exact and overlap match) and the per-type table of the test (else dev) split."""
    splits = {name: value for name, value in metrics.items() if isinstance(value, dict) and "micro" in value}
    if not splits:
        rows = [
            f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        return (
            ["| metric | value |", "|---|---|", *rows, ""]
            if rows
            else ["No numeric scores were recorded.", ""]
        )
    lines = ["| split | precision | recall | F1 (exact) | F1 (overlap) |", "|---|---|---|---|---|"]
    for name, scores in splits.items():
        micro, overlap = scores["micro"], scores.get("overlap", {}).get("micro", {})
        overlap_f1 = f"{overlap['f1']:.4f}" if overlap else "-"
        lines.append(
            f"| {name} | {micro['precision']:.4f} | {micro['recall']:.4f} | {micro['f1']:.4f} |"
            f" {overlap_f1} |"
        )
    shown = "test" if "test" in splits else next(iter(splits))
    lines += ["", f"Per type ({shown}, exact match):", "", format_table(splits[shown]), ""]
    if isinstance(metrics.get("best_epoch"), int):
        lines += [f"Best epoch on dev: {metrics['best_epoch']}.", ""]
    return lines
