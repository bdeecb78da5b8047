"""What every command shares: the error boundary, logging setup and ``--set`` parsing.

The boundary (``guarded``, wrapped around every command at registration, and ``run_or_exit``) decides what a
failure looks like; no traceback reaches a user unless ``CARDIONER_DEBUG=1`` asks for it:

- exit 0: done;
- exit 1, one ``error:`` line: something the user can act on — the project's own errors
  (ConfigError, CorpusError: bad corpus, bad configuration, bad output path), a file-system
  error (no permission, disk full: ``OSError``, which names the path), and a ``ValueError``
  raised on purpose: by a ``raise`` statement in cardioner (the library's older checks) or
  inside another library, which rejects a value it was handed (``deliberate``);
- exit 2: a usage error (an unknown option, ``--epochs abc``), printed by Typer as usage plus one line;
- exit 70 (EX_SOFTWARE), ``internal error:``: anything else is a bug in cardioner, and says so, with the hint
  to rerun with CARDIONER_DEBUG=1 for the traceback: ``KeyError``, ``TypeError``, ``AttributeError``,
  ``RuntimeError``..., and a ``ValueError`` that Python itself raised inside cardioner's code (unpacking the
  wrong number of values, ``int("x")``, ``max([])``);
- exit 130: interrupted (Ctrl-C), one line: ``interrupted:`` and what the command kept and how to go on
  (``on_interrupt``).
"""

from __future__ import annotations

import dis
import functools
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

import click
import typer

from cardioner import processes
from cardioner.config import resolve_key
from cardioner.errors import CardioNERError, ConfigError

#: the exit code of a failure that is a bug in cardioner (sysexits' EX_SOFTWARE)
INTERNAL_ERROR_EXIT = 70
#: what a user can act on (a ValueError only when ``deliberate``); anything else is a bug
USER_ERRORS: tuple[type[BaseException], ...] = (CardioNERError, OSError)
DEBUG_VARIABLE = "CARDIONER_DEBUG"


class LibraryNoise(logging.Filter):
    """What the libraries print on every run that tells a user nothing they can act on, held back unless
    ``--verbose``: transformers' LOAD REPORT when it only lists weights the backbone's checkpoint has and an
    encoder does not use (``UNEXPECTED``: the pooler, a masked-LM head; a report with MISSING or MISMATCHED
    weights still shows), and the traceback Optuna logs for a trial that Ctrl-C stopped (the command says
    "interrupted" in one line). Other trial failures keep their line, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" in message:
            statuses = re.findall(r"\|\s*(?:\x1b\[[0-9;]*m)?([A-Z]+)(?:\x1b\[[0-9;]*m)?\s*\|", message)
            return not statuses or set(statuses) - {"UNEXPECTED", "Status"} != set()
        if record.exc_info and record.name.startswith("optuna"):
            if isinstance(record.exc_info[1], KeyboardInterrupt):  # and Optuna's next line about that trial
                self.interrupted_trial = message.split(" failed with", 1)[0]
                return False
            record.exc_info, record.exc_text = None, None
        return not (getattr(self, "interrupted_trial", None)
                    and message.startswith(f"{self.interrupted_trial} failed with value"))


# the loggers whose records LibraryNoise looks at (a logger's filters see the records logged on it)
NOISY_LOGGERS = ("transformers.modeling_utils", "transformers.modeling_layers", "optuna.study._optimize")
# warnings held back unless --verbose: Optuna marks its plots and its storage heartbeat "experimental", warns
# that importances from a few trials are rough, and its plots of a study without scores draw empty legends
NOISY_WARNINGS = (r".* is experimental \(supported from v", r".* is an experimental feature",
                  r"Target and region quantiles select the same", r"Some regimes for parameter",
                  r"No artists with labels found to put in legend")


def setup_logging(verbose: bool = False) -> None:
    """Log INFO lines (DEBUG with ``verbose``) as ``time level name: message``; hold back LibraryNoise and
    NOISY_WARNINGS unless ``verbose``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("transformers", "accelerate", "datasets", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the Hub client warns of every failed request (offline: each one); the error that follows names the model
    logging.getLogger("huggingface_hub").setLevel(logging.DEBUG if verbose else logging.ERROR)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, LibraryNoise)]:
            logger.removeFilter(old)
        if not verbose:
            logger.addFilter(LibraryNoise())
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("default" if verbose else "ignore", message=pattern)
    # under a launcher the main process tells the story; the others, their errors
    for name in ("", "transformers", "accelerate", "datasets", "huggingface_hub"):
        processes.quiet_other_processes(logging.getLogger(name))


def echo(text: str) -> None:
    """Print a command's result: once, by the main process, under a launcher."""
    if processes.is_main():
        typer.echo(text)


# What the running command says when Ctrl-C stops it (see on_interrupt); reset by `guarded` for each command.
_interrupt_note: list[Callable[[], str | None]] = []


def on_interrupt(note: Callable[[], str | None]) -> None:
    """Have Ctrl-C end the running command with ``interrupted: <note()>``: what was kept and how to go on.
    ``note`` is called when the interruption happens (it may look at what is on disk by then)."""
    _interrupt_note[:] = [note]


def nothing_written(*outputs: object) -> Callable[[], str]:
    """The note of a command whose outputs are written whole or not at all (``data.paths``): none of them was
    written, and the command can simply run again."""
    named = ", ".join(str(output) for output in outputs if output is not None)
    return lambda: (f"{named or 'nothing'} was not written (outputs are written whole or not at all); rerun "
                    "the command")


def interrupted_message() -> str:
    """``interrupted`` and the running command's note, if any (a failing note is left out)."""
    try:
        note = _interrupt_note[0]() if _interrupt_note else None
    except Exception:  # the note is a courtesy: the interruption still ends the command with exit 130
        note = None
    return f"interrupted: {note}" if note else "interrupted"


def debugging() -> bool:
    """Whether ``CARDIONER_DEBUG`` asks for tracebacks (set, and not 0/false/no)."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def deliberate(error: ValueError) -> bool:
    """Whether a plain ValueError was raised on purpose, with a message meant for the user.

    True when it comes from a ``raise`` statement in cardioner's code (a check of its input) or from inside
    another library (rejecting a value it was given); False when Python raised it inside cardioner's code —
    an unpacking of the wrong length, ``int("x")``, ``max([])``: a bug. Decided from the instruction the
    innermost traceback frame stopped at.
    """
    tb = error.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if frame.f_globals.get("__name__", "").split(".")[0] != "cardioner":
        return True
    for instruction in dis.get_instructions(frame.f_code):
        if instruction.offset == tb.tb_lasti:
            return instruction.opname in ("RAISE_VARARGS", "RERAISE")
    return True


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is something the user can act on (exit 1) rather than a bug (exit 70)."""
    return isinstance(error, USER_ERRORS) or (isinstance(error, ValueError) and deliberate(error))


def _user_message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        also = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{also}: {error.strerror}"
    return str(error).strip() or type(error).__name__


def fail(error: BaseException) -> NoReturn:
    """Print ``error`` as one line and exit: 1 for a user error, 70 for a bug, 130 for an interruption."""
    if isinstance(error, KeyboardInterrupt):
        typer.secho(interrupted_message(), fg=typer.colors.RED, err=True)
        sys.exit(130)
    if is_user_error(error):
        typer.secho(f"error: {_user_message(error)}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    typer.secho(
        f"internal error (a bug in cardioner): {type(error).__name__}{': ' + detail if detail else ''}; "
        f"rerun with {DEBUG_VARIABLE}=1 to see the traceback, and please report it",
        fg=typer.colors.RED,
        err=True,
    )
    sys.exit(INTERNAL_ERROR_EXIT)


def _passes_through(error: BaseException) -> bool:
    """Exits and Typer/Click usage errors, which Click itself turns into an exit code and a short message.

    Typer 0.2x carries its own copy of Click (``typer.BadParameter`` is no ``click.ClickException``): its
    exceptions derive from ``typer.TyperException``.
    """
    return isinstance(error, (SystemExit, click.exceptions.ClickException, click.exceptions.Exit,
                              click.exceptions.Abort, typer.TyperException, typer.Exit, typer.Abort))


def run_or_exit(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a library function; any failure becomes one line and an exit code (see the module docstring).

    Set ``CARDIONER_DEBUG=1`` to see the traceback instead.
    """
    try:
        return function(*args, **kwargs)
    except BaseException as error:
        if _passes_through(error) or debugging():
            raise
        fail(error)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with the error boundary around all of it:
    option checks, existence checks, imports, output."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _interrupt_note.clear()
        return run_or_exit(command, *args, **kwargs)

    return wrapper


def parse_sets(values: list[str] | None) -> dict[str, str]:
    """``--set training.lr=3e-5 --set model.head=mlp`` -> {"training.lr": "3e-5", ...}.

    Keys are dotted (``section.name``): a key without its section, or a misspelled one, is a usage error that
    names the key meant, never applied to a section the user did not name.
    """
    overrides: dict[str, str] = {}
    for item in values or []:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            key = resolve_key(key.strip(), "--set", dotted=True)
        except ConfigError as error:
            raise typer.BadParameter(str(error)) from None
        overrides[key] = value.strip()
    return overrides
