"""The model card's Hub metadata: what the Hub reads from an
export's README.md (``cardioner.push`` uploads it).

The card's YAML front matter is written with huggingface_hub's own ``ModelCardData``, so the Hub (and
``huggingface_hub.ModelCard`` / ``metadata_load``, offline) read it: library, pipeline tag, license, data
sets, tags, base model and the scores as ``model-index`` results. Data is named by its folder name and
document count, never by the absolute paths of the machine that trained the model.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

#: file names that say which split a file or folder is, not which corpus (the corpus is the folder above)
_SPLIT_NAMES = {"train", "training", "dev", "devel", "development", "valid", "validation", "val", "test",
                "testing", "eval", "data"}
#: folder names that say which format, not which corpus
_FORMAT_NAMES = {"brat", "conll", "jsonl", "json", "tsv", "hf", "data", "corpus"}
#: how the export's metrics.json names splits -> the Hub's split names
_HUB_SPLITS = {"test": "test", "dev": "validation"}
#: the licence of a card that was given none (a valid Hub identifier); ``push --license`` sets the real one
UNKNOWN_LICENSE = "unknown"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def data_name(path: str | Path) -> str:
    """A data file's or folder's name without the machine's
    path: ``/x/ncbi_sample/train`` -> ``ncbi_sample/train``.

    The last two parts of the path (one when it has one), so that a split keeps its corpus's name.
    """
    parts = [part for part in re.split(r"[\\/]+", str(path))  # either separator: a path from Windows too
             if part not in ("", ".", "..", "~") and not re.fullmatch(r"[A-Za-z]:", part)]
    return "/".join(parts[-2:]) if parts else str(path)


def dataset_name(path: str | Path) -> str:
    """The corpus a split path belongs to: the nearest folder whose name is neither a split nor a format.

    ``/x/ncbi_sample/test`` -> ``ncbi_sample``; ``/x/ncbi_disease/conll/test.tsv`` -> ``ncbi_disease``.
    """
    parts = [Path(p).stem if i == len(Path(str(path)).parts) - 1 else p
             for i, p in enumerate(Path(str(path)).parts)]
    for part in reversed(parts):
        if part.lower() not in _SPLIT_NAMES | _FORMAT_NAMES and part not in ("/", "\\", ""):
            return part
    return Path(str(path)).name or "data"


def hub_id(name: str | None) -> str | None:
    """``name`` if it can be a Hub model id (``org/name`` or ``name``), None for a local path."""
    if not name or name.startswith((".", "/", "~")) or "\\" in name or not _HUB_ID.match(name):
        return None
    return None if Path(name).exists() else name


def folder_name(path: str) -> str:
    """The last part of a path, whichever separator the machine that wrote it used (``C:\\x\\bert`` ->
    ``bert``)."""
    return re.split(r"[\\/]+", path.rstrip("\\/"))[-1] or path


def backbone_name(name: str) -> str:
    """A backbone as the card names it: a Hub id as it is, a local folder by its name."""
    return hub_id(name) or folder_name(name)


#: the training configuration's keys that hold paths of the machine that trained the model, and what the Hub
#: copy of training_config.yaml keeps of them: what the card shows (``shareable_config``)
PATH_KEYS = {"data.train": data_name, "data.dev": data_name, "data.test": data_name,
             "model.model": backbone_name, "training.output": folder_name,
             "training.feature_cache_dir": folder_name}


def shareable_config(training_config: dict) -> dict:
    """A copy of a training configuration (training_config.yaml: sections ``data``, ``model``,
    ``training``) for the Hub: every key of ``PATH_KEYS`` reduced to the name the card shows (a corpus by its
    last two path parts, a folder by its name, a Hub backbone id kept), so that no absolute path of the
    training machine (which may name people or projects) leaves it; every other key as it is."""
    shared = {section: dict(values) if isinstance(values, dict) else values
              for section, values in training_config.items()}
    for key, name in PATH_KEYS.items():
        section, field = key.split(".")
        values = shared.get(section)
        if isinstance(values, dict) and isinstance(values.get(field), str):
            values[field] = name(values[field])
    return shared


def shareable_model_config(model_config: dict) -> dict:
    """A copy of an export's config.json for the Hub: the backbone's ``_name_or_path`` (where the training
    machine read it) reduced to the name the card shows (``backbone_name``); nothing else changes, and the
    model loads the same (its backbone's configuration is embedded whole)."""
    def reduced(config: dict) -> dict:
        name = config.get("_name_or_path")
        return {**config, "_name_or_path": backbone_name(name)} if isinstance(name, str) and name else config

    shared = reduced(model_config)
    if isinstance(shared.get("backbone_config"), dict):
        shared = {**shared, "backbone_config": reduced(shared["backbone_config"])}
    return shared


def card_data(entity_types: list[str], metrics: dict, card: dict):
    """The card's metadata as ``huggingface_hub.ModelCardData``.

    Args:
        entity_types: the model's entity types (tags of the card).
        metrics: the export's metrics.json ({"dev": scores, "test": scores, ...}).
        card: model-card fields: "title", "base_model", "language", "license", "datasets" (names).
    """
    title = card.get("title", "cardioner token-classification model")
    datasets = [str(d) for d in card.get("datasets") or []]
    results = []
    for split, hub_split in _HUB_SPLITS.items():
        scores = metrics.get(split)
        if not isinstance(scores, dict) or "micro" not in scores:
            continue
        name = datasets[0] if datasets else "unnamed"
        overlap = scores.get("overlap", {}).get("micro", {})
        values = [("precision", scores["micro"]["precision"], "precision (exact span)"),
                  ("recall", scores["micro"]["recall"], "recall (exact span)"),
                  ("f1", scores["micro"]["f1"], "F1 (exact span, micro)")]
        if "macro" in scores and "f1" in scores["macro"]:
            values.append(("f1", scores["macro"]["f1"], "F1 (exact span, macro)"))
        if "f1" in overlap:
            values.append(("f1", overlap["f1"], "F1 (overlapping span, micro)"))
        results += [EvalResult(task_type="token-classification", task_name="Named-entity recognition",
                               dataset_type=name, dataset_name=name, dataset_split=hub_split,
                               metric_type=kind, metric_value=round(float(value), 4), metric_name=label)
                    for kind, value, label in values]
    return ModelCardData(
        model_name=title,
        base_model=hub_id(card.get("base_model")),
        language=card.get("language"),
        license=card.get("license") or UNKNOWN_LICENSE,
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["cardioner", "token-classification", "ner", *(f"entity:{t}" for t in entity_types)],
        datasets=datasets or None,
        eval_results=results or None,
    )


def front_matter(entity_types: list[str], metrics: dict, card: dict) -> list[str]:
    """The card's YAML front matter, lines between ``---`` fences."""
    return ["---", *card_data(entity_types, metrics, card).to_yaml().splitlines(), "---"]
