"""``cardioner push``: upload an export to the Hugging Face Hub."""

from __future__ import annotations

from typing import Annotated

import typer

from cardioner.cli import options
from cardioner.cli.common import run_or_exit, setup_logging
from cardioner.cli.flags import PUSH_FLAGS, speaking_flags


def push(
    model: options.ModelDir,
    repo: Annotated[str, typer.Option(metavar="NAMESPACE/NAME",
                                      help="the Hub repository: NAMESPACE/NAME (created if needed)")],
    private: Annotated[bool, typer.Option("--private", help="create the repository private")] = False,
    token: Annotated[str | None, typer.Option(metavar="TOKEN",
                                              help="Hub token (default: HF_TOKEN, `hf auth login`)")] = None,
    license: Annotated[str | None, typer.Option(metavar="LICENSE",
                                                help="licence id for the card (apache-2.0, ...)")] = None,
    revision: Annotated[str | None, typer.Option(metavar="BRANCH",
                                                 help="branch to push to (default: main)")] = None,
    message: Annotated[str | None, typer.Option(metavar="TEXT", help="commit message")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="open a pull request instead")] = False,
    keep_paths: Annotated[bool, typer.Option("--keep-paths", help=(
        "upload training_config.yaml and config.json as they are, with this machine's paths (default: "
        "copies with every path reduced to the folder name the card shows; the local files never change)"))
    ] = False,
    verbose: options.Verbose = False,
) -> None:
    """Upload an export (weights, modeling.py, tokenizer, model card with Hub metadata) to the Hub."""
    from cardioner.push import push_to_hub  # when run (cli/__init__)

    setup_logging(verbose)
    url = run_or_exit(speaking_flags(push_to_hub, PUSH_FLAGS), model, repo, private=private, token=token,
                      license=license, revision=revision, commit_message=message, create_pr=create_pr,
                     keep_paths=keep_paths)
    typer.echo(f"pushed {model} to {url}")
