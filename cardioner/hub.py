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
    parts = Path(str(path)).parts
    parts = [p for p in parts if p not in ("/", "\\") and not re.fullmatch(r"[A-Za-z]:\\?", p)]
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
