"""Upload an export to the Hugging Face Hub (``cardioner push``), its model card first made whole.

The card's metadata is written when the export is saved (``cardioner.hub``); here a licence may be added to
it, and the folder's files go up in one commit with huggingface_hub (a model repository, created if needed).
training_config.yaml and config.json go up as copies whose paths are reduced to the names the card shows
(``hub.shareable_config``, ``hub.shareable_model_config``; the local files are not changed) unless
``keep_paths``. Errors name the argument (``repo_id``) or the folder; the command line names its flags.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import huggingface_hub  # its HfApi is looked up at call time (tests put a fake one in its place)
import yaml

from cardioner.config import read_config_file
from cardioner.errors import ConfigError, CorpusError
from cardioner.export import is_export
from cardioner.hub import PATH_KEYS, UNKNOWN_LICENSE, shareable_config, shareable_model_config

logger = logging.getLogger("cardioner")

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
TRAINING_CONFIG = "training_config.yaml"


def push_to_hub(model_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                license: str | None = None, revision: str | None = None, commit_message: str | None = None,
                create_pr: bool = False, keep_paths: bool = False) -> str:
    """Upload an export folder to the Hub (a model repository, created if needed), its files in one commit
    (hidden files and folders left out).

    Args:
        model_dir: the export folder.
        repo_id: ``user/name`` or ``org/name``.
        private: create the repository private.
        token: a Hub token (default: the one huggingface_hub finds: ``HF_TOKEN``, ``hf auth login``).
        license: a Hub licence identifier written into the
            card's metadata before upload (e.g. ``apache-2.0``).
        revision: the branch to push to.
        commit_message: the commit message.
        create_pr: open a pull request instead of committing to the branch.
        keep_paths: upload training_config.yaml and config.json as they are, with the training machine's
            paths; by default the Hub gets copies in which every path-valued key (``hub.PATH_KEYS``:
            data.train, data.dev, data.test, model.model, training.output, training.feature_cache_dir; and
            config.json's backbone ``_name_or_path``) is reduced to the name the card shows. The local files
            are never changed.

    Returns:
        the URL of the commit (or pull request).
    """
    model_dir = Path(model_dir)
    if not is_export(model_dir):
        raise CorpusError("not an exported model folder (no cardioner config.json)", model_dir)
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id:
        raise ConfigError(f"repo_id must be NAMESPACE/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}")
    readme = model_dir / "README.md"
    if not readme.is_file():
        raise CorpusError("the export has no model card (README.md)", model_dir)
    # parses the front matter: a broken card fails before upload
    card = huggingface_hub.ModelCard.load(readme)
    if license is not None:
        card.data.license = license
        card.save(readme)
    if card.data.license in (None, UNKNOWN_LICENSE):
        logger.warning(
            "the model card names no licence; give one (a Hub licence id: apache-2.0, cc-by-4.0, ...)"
        )
    operations = upload_operations(model_dir, keep_paths)
    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.create_commit(
            repo_id=repo_id,
            operations=operations,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or f"Upload {model_dir.name} (cardioner export)",
        )
    except Exception as error:  # network, authentication, permissions: one sentence, not a traceback
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(f"repo_id {repo_id}: upload failed ({type(error).__name__}: {first})") from error
    return str(getattr(commit, "pr_url", None) or getattr(commit, "commit_url", None) or commit)


def upload_operations(model_dir: Path, keep_paths: bool = False) -> list[huggingface_hub.CommitOperationAdd]:
    """One file addition per file of the export (hidden files and folders left out); training_config.yaml
    and config.json as ``hub.shareable_config`` and ``hub.shareable_model_config`` make them unless
    ``keep_paths``."""
    operations = []
    for path in sorted(model_dir.rglob("*")):
        name = path.relative_to(model_dir).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in name.split("/")):
            continue
        content: Path | bytes = path
        if name == TRAINING_CONFIG and not keep_paths:
            shared = shareable_config(read_config_file(path))
            content = yaml.safe_dump(shared, sort_keys=False, allow_unicode=True).encode("utf-8")
            logger.info("%s goes up with its paths reduced to names (%s); keep_paths uploads it as it is",
                        TRAINING_CONFIG, ", ".join(PATH_KEYS))
        elif name == "config.json" and not keep_paths:  # the backbone's path, as transformers recorded it
            shared = shareable_model_config(json.loads(path.read_text(encoding="utf-8")))
            content = (json.dumps(shared, indent=2, sort_keys=True) + "\n").encode("utf-8")
        operations.append(huggingface_hub.CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
    return operations
