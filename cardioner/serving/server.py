"""Start the server: check the export and the settings, then hand the application to uvicorn."""

from __future__ import annotations

import errno
import importlib.util
import os
import socket
from functools import partialmethod
from pathlib import Path

import tqdm.std
from transformers.utils import logging as transformers_logging

from cardioner.errors import ConfigError, CorpusError
from cardioner.export import is_export

SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "cassis": "dkpro-cassis"}


def check_serve_packages() -> None:
    """Raise a one-sentence error naming the serving packages that are not installed."""
    missing = [
        package for module, package in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ConfigError(f"cardioner serve needs {', '.join(missing)}: pip install \"cardioner[serve]\"")


def silence_progress_bars() -> None:
    """No progress bar per request in the server's log (a server's progress is its access log).

    tqdm reads ``TQDM_DISABLE`` when first imported (worker processes started by uvicorn do); in this process
    cardioner's command line imported it already, so its bars are disabled by default here too.
    """
    os.environ["TQDM_DISABLE"] = "1"
    tqdm.std.tqdm.__init__ = partialmethod(tqdm.std.tqdm.__init__, disable=True)
    transformers_logging.disable_progress_bar()


def check_port(host: str, port: int) -> None:
    """Raise ConfigError naming the port when the server could not listen there (another server holds it, or
    the address is not this machine's), before the model loads; uvicorn would say so only after, in a log
    line, and exit with code 3. Bound as uvicorn binds (SO_REUSEADDR), then released."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        held = "; another server holds it" if error.errno == errno.EADDRINUSE else ""
        raise ConfigError(f"port {port} on {host} cannot be listened on ({error.strerror or error}{held})"
                          ) from None


def run_server(model: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               threads: int | None = None, log_level: str = "info", **settings) -> None:
    """Serve the export ``model`` until interrupted.

    Args:
        model: the export folder.
        host: the address to listen on.
        port: the port.
        workers: server processes, each with its own model; requests are batched within each.
        threads: torch threads per process (None: the machine's cores divided among the workers).
        log_level: uvicorn's log level.
        settings: the other ``ServeSettings`` fields (batch sizes, limits, INCEpTION layer and feature).
    """
    check_serve_packages()
    if not Path(model).is_dir():
        raise CorpusError("no such folder", model)
    if not is_export(model):
        raise CorpusError("not an exported model folder (no cardioner config.json)", model)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    check_port(host, port)
    import uvicorn  # the serve extra (optional): checked above, imported only to serve

    from cardioner.serving.app import SETTINGS_ENV, ServeSettings, create_app  # FastAPI: the serve extra too

    if threads is None and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
    config = ServeSettings(model=str(Path(model).resolve()), threads=threads, **settings).check()
    silence_progress_bars()
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, log_level=log_level)
    else:  # each worker process builds the app from the settings in its environment
        os.environ[SETTINGS_ENV] = config.to_env()
        uvicorn.run("cardioner.serving.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level)
