"""The Hugging Face Hub side of an export: the model card's metadata and ``cardioner push``.

The card's YAML front matter is written with huggingface_hub's own ``ModelCardData``, so the Hub (and
``huggingface_hub.ModelCard`` / ``metadata_load``, offline) read it: library, pipeline tag, license, data sets,
tags, base model and the scores as ``model-index`` results. Data is named by its folder name and document
count, never by the absolute paths of the machine that trained the model.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger("cardioner")

#: file names that say which split a file or folder is, not which corpus (the corpus is the folder above)
_SPLIT_NAMES = {"train", "training", "dev", "devel", "development", "valid", "validation", "val", "test", "testing",
                "eval", "data"}
#: folder names that say which format, not which corpus
_FORMAT_NAMES = {"brat", "conll", "jsonl", "json", "tsv", "hf", "data", "corpus"}
#: how the export's metrics.json names splits -> the Hub's split names
_HUB_SPLITS = {"test": "test", "dev": "validation"}
#: the licence of a card that was given none (a valid Hub identifier); ``push --license`` sets the real one
UNKNOWN_LICENSE = "unknown"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def data_name(path: str | Path) -> str:
    """A data file's or folder's name without the machine's path: ``/x/ncbi_sample/train`` -> ``ncbi_sample/train``.

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
    from huggingface_hub import EvalResult, ModelCardData

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


def push_to_hub(model_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                license: str | None = None, revision: str | None = None, commit_message: str | None = None,
                create_pr: bool = False) -> str:
    """Upload an export folder to the Hub (a model repository, created if needed).

    Args:
        model_dir: the export folder.
        repo_id: ``user/name`` or ``org/name``.
        private: create the repository private.
        token: a Hub token (default: the one huggingface_hub finds: ``HF_TOKEN``, ``hf auth login``).
        license: a Hub licence identifier written into the card's metadata before upload (e.g. ``apache-2.0``).
        revision: the branch to push to.
        commit_message: the commit message.
        create_pr: open a pull request instead of committing to the branch.

    Returns:
        the URL of the commit (or pull request).
    """
    from huggingface_hub import HfApi, ModelCard

    from cardioner.export import is_export

    model_dir = Path(model_dir)
    if not is_export(model_dir):
        raise ValueError(f"--model {model_dir}: not an exported model folder (no cardioner config.json)")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo_id) or ".." in repo_id:
        raise ValueError(f"--repo must be NAMESPACE/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}")
    readme = model_dir / "README.md"
    if not readme.is_file():
        raise ValueError(f"--model {model_dir}: the export has no model card (README.md)")
    card = ModelCard.load(readme)  # parses the front matter: a broken card fails here, before any upload
    if license is not None:
        card.data.license = license
        card.save(readme)
    if card.data.license in (None, UNKNOWN_LICENSE):
        logger.warning("the model card names no licence; pass --license ID (e.g. apache-2.0, cc-by-4.0)")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), repo_type="model", revision=revision,
                                   commit_message=commit_message or f"Upload {model_dir.name} (cardioner export)",
                                   create_pr=create_pr, ignore_patterns=[".*", "**/.*"])
    except Exception as error:  # network, authentication, permissions: one sentence, not a traceback
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(f"--repo {repo_id}: upload failed ({type(error).__name__}: {first})") from error
    return str(getattr(commit, "pr_url", None) or getattr(commit, "commit_url", None) or commit)
