"""``cardioner serve``: an export behind HTTP (``/predict``, ``/health``, ``/info``) and INCEpTION."""

from __future__ import annotations

from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import run_or_exit, setup_logging
from cardioner.cli.flags import SERVE_FLAGS, speaking_flags


def serve(
    model: options.ModelDir,
    host: Annotated[str, typer.Option(metavar="ADDRESS",
                                      help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(metavar="N",
                                         help="server processes, each with its own copy of the model")] = 1,
    threads: Annotated[
        int | None, typer.Option(metavar="N", help="torch threads per worker (default: cores / workers)")
    ] = None,
    batch_size: options.BatchSize = 32,
    max_batch_size: Annotated[
        int, typer.Option(metavar="N", help="most documents of concurrent requests run together")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(metavar="MS", help="how long a request waits for others to share its batch")
    ] = 5.0,
    max_request_bytes: Annotated[int, typer.Option(metavar="BYTES",
                                                   help="largest request body accepted (413 above)")] = 16
    * 2**20,
    max_length: options.ExportMaxLength = None,
    stride: options.ExportStride = None,
    inception_layer: Annotated[
        str, typer.Option(metavar="TYPE", help="the INCEpTION layer to predict into")
    ] = "de.tudarmstadt.ukp.dkpro.core.api.ner.type.NamedEntity",
    inception_feature: Annotated[
        str, typer.Option(metavar="FEATURE", help="the feature of that layer that takes the type")
    ] = "value",
    log_texts: Annotated[
        bool, typer.Option("--log-texts", help="log request texts (debugging; off: no text in " "logs)")
    ] = False,
    verbose: options.Verbose = False,
) -> None:
    """Serve an export: POST /predict, GET /health, GET /info, and INCEpTION's recommender at /inception."""
    from cardioner.serving.server import run_server  # when run (cli/__init__)

    setup_logging(verbose)
    run_or_exit(speaking_flags(run_server, SERVE_FLAGS), model, host=host, port=port, workers=workers,
                threads=threads, batch_size=batch_size, max_batch_size=max_batch_size,
                max_wait_ms=max_wait_ms, max_request_bytes=max_request_bytes, max_length=max_length,
                stride=stride, inception_layer=inception_layer, inception_feature=inception_feature,
                log_texts=log_texts, log_level="debug" if verbose else "info")
