"""The project's own errors: what a user did wrong, in one sentence that names the file, the line or the key.

Everything the library raises on bad input is one of these (``ValueError`` subclasses, so older ``except
ValueError`` code keeps working). The command line prints them as one ``error:`` line and exits 1; any other
exception is a bug in cardioner and is reported as one (``cardioner.cli.common``).
"""

from __future__ import annotations

from pathlib import Path


class CardioNERError(ValueError):
    """Base of the errors a user can act on (bad corpus, bad configuration, bad output path)."""


class ConfigError(CardioNERError):
    """A configuration problem: names the file, the key and (for unknown keys) the nearest valid key."""


class CorpusError(CardioNERError):
    """Bad input or output data: names the file, the line (or record) and the problem.

    Args:
        message: what is wrong, including the bad value.
        path: the file (or folder) being read or written.
        line: 1-based line (or JSONL record) number, when there is one.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.problem = message
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)
