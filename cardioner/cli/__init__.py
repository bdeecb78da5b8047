"""The ``cardioner`` command line: a registry of thin commands, one module each.

Each command parses its options into a Config or arguments and calls one library function. Commands import
the library (torch, transformers: seconds) when they run, not when this module loads, so that
``cardioner --help`` and a mistyped option answer at once; these deferred imports are marked "when run".
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cardioner import __version__

try:  # the option types load torch (seconds): Ctrl-C meanwhile is one line too, not an import traceback
    from cardioner.cli import analyze as _analyze  # in the try above: Ctrl-C while these load
    from cardioner.cli import calibrate as _calibrate
    from cardioner.cli import compare as _compare
    from cardioner.cli import convert as _convert
    from cardioner.cli import evaluate as _evaluate
    from cardioner.cli import options as _options
    from cardioner.cli import predict as _predict
    from cardioner.cli import push as _push
    from cardioner.cli import serve as _serve
    from cardioner.cli import train as _train
    from cardioner.cli import tune as _tune
    from cardioner.cli.common import guarded
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

# pretty_exceptions_show_locals: with CARDIONER_DEBUG=1 a traceback shows the code, not every local variable
app = typer.Typer(name="cardioner", help="Named-entity recognisers on any Hugging Face encoder.",
                  cls=_options.Group, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cardioner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print cardioner's version and exit")] = False,
) -> None:
    """cardioner: train, evaluate, predict with, serve and convert NER corpora."""


app.command("train", cls=_options.Command)(guarded(_train.train))
app.command("evaluate", cls=_options.Command)(guarded(_evaluate.evaluate))
app.command("calibrate", cls=_options.Command)(guarded(_calibrate.calibrate))
app.command("predict", cls=_options.Command)(guarded(_predict.predict))
app.command("convert", cls=_options.Command)(guarded(_convert.convert))
app.command("tune", cls=_options.Command)(guarded(_tune.tune))
app.command("compare", cls=_options.Command)(guarded(_compare.compare))
app.command("analyze", cls=_options.Command)(guarded(_analyze.analyze))
app.command("serve", cls=_options.Command)(guarded(_serve.serve))
app.command("push", cls=_options.Command)(guarded(_push.push))


def main() -> None:
    """Run the command line."""
    app()
