"""Library errors name config keys and arguments (``training.output``, ``batch_size``); a command names its
own flags (``--output``, ``--batch-size``). ``speaking_flags`` wraps the library call of a command so that its
errors name the command's flags instead.

Dotted config keys are replaced wherever they stand in a message; a plain argument name only when it opens
the message (its subject: "batch_size must be >= 1"), since plain words also occur in prose.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

# The config keys that `train` takes as options of its own (the option's parameter is the flag's name).
CONFIG_FLAGS = {
    "data.train": "--train", "data.dev": "--dev", "data.test": "--test", "data.format": "--format",
    "model.model": "--model", "training.output": "--output", "model.use_crf": "--crf", "model.head": "--head",
    "data.multilabel": "--multilabel", "training.epochs": "--epochs", "training.batch_size": "--batch-size",
    "training.lr": "--lr", "data.max_length": "--max-length", "data.stride": "--stride",
    "training.seed": "--seed", "training.resume": "--resume", "training.log_with": "--log-with",
}
# Those `compare` takes: its --crf and --output mean something else (CRF settings to compare; the folder of
# the comparison, in which each run's training.output is a subfolder).
COMPARE_CONFIG_FLAGS = {key: flag for key, flag in CONFIG_FLAGS.items() if key in (
    "data.train", "data.dev", "data.test", "data.format", "model.model", "training.epochs",
    "training.batch_size", "training.lr", "data.max_length", "training.seed")}
COMPARE_FLAGS = {"crf": "--crf", "training.output": "--output", **COMPARE_CONFIG_FLAGS}
# `predict`, `evaluate` and `analyze`: their arguments, and the window keys of an export predict overrides.
PREDICT_FLAGS = {"batch_size": "--batch-size", "format": "--format", "data.format": "--format",
                 "data.max_length": "--max-length", "data.stride": "--stride", "dtype": "--dtype",
                 "quantize": "--quantize", "min_confidence": "--min-confidence", "chunk_size": "--chunk-size",
                 "reliability": "--reliability", "resume": "--resume"}
# `serve` and `push`: the arguments their library functions check.
SERVE_FLAGS = {**PREDICT_FLAGS, **{name: "--" + name.replace("_", "-") for name in (
    "workers", "port", "threads", "max_batch_size", "max_wait_ms", "max_request_bytes", "inception_layer",
    "inception_feature")}}
PUSH_FLAGS = {"repo_id": "--repo", "license": "--license", "keep_paths": "--keep-paths"}
CALIBRATE_FLAGS = {"batch_size": "--batch-size", "format": "--format", "data.format": "--format",
                   "update_modeling": "--update-modeling"}
CONVERT_FLAGS = {"to": "--to", "format": "--format", "data.format": "--format"}
# data.span_errors stays as it is: its option says "(data.span_errors)", and `train` sets it with --set.


def config_overrides(options: Mapping[str, Any], flags: Mapping[str, str]) -> dict[str, Any]:
    """{config key: value} for the options of a command (``typer.Context.params``) that set a key in
    ``flags``; an option left unset (None) is left out by ``load_config``."""
    names = {key: flag.removeprefix("--").replace("-", "_") for key, flag in flags.items()}
    return {key: options[name] for key, name in names.items() if name in options}


def flag_message(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with the keys in ``flags`` named by their flags (see the module docstring)."""
    dotted = sorted((key for key in flags if "." in key), key=len, reverse=True)
    if dotted:
        pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, dotted)) + r")(?![\w-])")
        message = pattern.sub(lambda match: flags[match.group(1)], message)
    for key in (key for key in flags if "." not in key):
        if re.match(rf"{re.escape(key)}(?![\w-])", message):
            message = flags[key] + message[len(key):]
    return message


def command_line_flags(function: Callable[..., Any], flags: Mapping[str, str]) -> Callable[..., Any]:
    """``load_config`` (or another function that names where a value came from), whose errors about a value
    given on the command line (``command line: model.head must be ...``) name the flags in ``flags``; an
    error about a config file keeps the file's keys."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ValueError as error:
            if error.args and isinstance(error.args[0], str) and error.args[0].startswith("command line: "):
                error.args = (flag_message(error.args[0], flags), *error.args[1:])
            raise

    return call


def speaking_flags(function: Callable[..., Any], flags: Mapping[str, str]) -> Callable[..., Any]:
    """``function``, whose user errors (ConfigError, CorpusError, other ValueErrors and OSErrors) name the
    flags in ``flags`` for the keys."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (ValueError, OSError) as error:
            if error.args and isinstance(error.args[0], str):
                error.args = (flag_message(error.args[0], flags), *error.args[1:])
            raise

    return call
