"""Upload an export to the Hugging Face Hub (``cardioner push``), its model card first made whole.

The card's metadata is written when the export is saved (``cardioner.hub``); here a licence may be added to
it, and the folder goes up with huggingface_hub (a model repository, created if needed). Errors name the
argument (``repo_id``) or the folder; the command line names its flags.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import huggingface_hub  # its HfApi is looked up at call time (tests put a fake one in its place)

from cardioner.errors import ConfigError, CorpusError
from cardioner.export import is_export
from cardioner.hub import UNKNOWN_LICENSE

logger = logging.getLogger("cardioner")

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def push_to_hub(model_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                license: str | None = None, revision: str | None = None, commit_message: str | None = None,
                create_pr: bool = False) -> str:
    """Upload an export folder to the Hub (a model repository, created if needed).

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
    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(model_dir),
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
            ignore_patterns=[".*", "**/.*"],
            commit_message=commit_message or f"Upload {model_dir.name} (cardioner export)",
        )
    except Exception as error:  # network, authentication, permissions: one sentence, not a traceback
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OSError(f"repo_id {repo_id}: upload failed ({type(error).__name__}: {first})") from error
    return str(getattr(commit, "pr_url", None) or getattr(commit, "commit_url", None) or commit)
