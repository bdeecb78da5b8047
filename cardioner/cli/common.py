"""What every command shares: turning user errors into one clear sentence and logging setup."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import typer


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("transformers", "accelerate", "datasets", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_or_exit(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a library function; a user error (bad input, bad config, missing file) exits 1 with one sentence.

    Set ``CARDIONER_DEBUG=1`` to see the traceback instead.
    """
    try:
        return function(*args, **kwargs)
    except (ValueError, OSError, KeyError) as error:
        if os.environ.get("CARDIONER_DEBUG"):
            raise
        message = str(error).strip() or type(error).__name__
        if isinstance(error, KeyError):
            message = f"missing key {message}"
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(1)


def parse_sets(values: list[str] | None) -> dict[str, str]:
    """``--set training.lr=3e-5 --set model.head=mlp`` -> {"training.lr": "3e-5", ...}."""
    overrides: dict[str, str] = {}
    for item in values or []:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides
