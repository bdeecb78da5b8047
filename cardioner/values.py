"""One validation of every number that reaches a configuration or a character offset, and one way of saying
how many of a thing there are (``counted``: "1 document", "2 entities").

A number is accepted only when it is what it says:

- finite (no ``inf``/``nan``, no ``Infinity``/``NaN`` in JSON, no ``1e999``);
- an integer where an integer is meant: never a boolean, never a fraction (``0.9`` is not truncated to 0);
- within ``MAX_INT`` (what torch and numpy hold), so that a 5,000-digit string is refused by its length before
  Python is asked to convert it;
- written in ASCII: ``[0-9]`` only (no ``1_0``, no Arabic-Indic or full-width digits, which ``int()`` takes).

Offsets read from JSON must be JSON integers (a string ``"5"`` or a float ``5.0`` is refused); configuration
values may be text (a command-line ``--set`` always is, and YAML 1.1 reads ``3e-5`` as text), parsed by the
same rules. Errors are ``InvalidValue`` with the problem only; callers raise their own ConfigError or
CorpusError naming the key or the file and line.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_INT = 2**63 - 1
#: longest text accepted as a number (a float with exponent and 17 significant digits needs ~25)
MAX_NUMBER_TEXT = 40
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class InvalidValue(ValueError):
    """A value that is not the number (or data) it should be;
    ``str(error)`` says why, without naming where."""


def _shown(value: Any) -> str:
    """``repr(value)``, cut short for a long string (a 5,000-digit number is shown by its length)."""
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def as_int(value: Any, *, text: bool = True, whole_floats: bool = False) -> int:
    """``value`` as an integer in [-MAX_INT, MAX_INT], or InvalidValue.

    Args:
        value: the value as parsed (YAML, JSON, the command line).
        text: accept a string of ASCII digits with an optional sign.
        whole_floats: accept a finite float without a fraction (``2.0``; YAML configs).
    """
    if isinstance(value, bool):
        raise InvalidValue(f"must be an integer, got the boolean {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(f"must be a finite integer, got {value!r}")
        if not (whole_floats and value.is_integer()):
            raise InvalidValue(f"must be an integer, got {value!r} (a fraction is never rounded)")
        value = int(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if not text or len(stripped) > MAX_NUMBER_TEXT or not _INT_TEXT.fullmatch(stripped):
            what = "an integer, not text" if not text else "an integer written with ASCII digits"
            raise InvalidValue(f"must be {what}, got {_shown(value)}")
        value = int(stripped)
    elif not isinstance(value, int):
        raise InvalidValue(f"must be an integer, got {type(value).__name__} {_shown(value)}")
    if abs(value) > MAX_INT:
        raise InvalidValue(f"must lie within +-{MAX_INT}, got a number of {value.bit_length()} bits")
    return value


def as_float(value: Any, *, text: bool = True) -> float:
    """``value`` as a finite float, or InvalidValue (booleans and non-ASCII or overlong text are refused)."""
    if isinstance(value, bool):
        raise InvalidValue(f"must be a number, got the boolean {value!r}")
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise InvalidValue(f"must lie within +-{MAX_INT}, got a number of {value.bit_length()} bits")
        return float(value)
    if isinstance(value, str):
        stripped = value.strip()
        if not text or len(stripped) > MAX_NUMBER_TEXT or not _FLOAT_TEXT.fullmatch(stripped):
            what = "a number, not text" if not text else "a finite number written with ASCII digits"
            raise InvalidValue(f"must be {what}, got {_shown(value)}")
        if not math.isfinite(float(stripped)):
            raise InvalidValue(f"must be a finite number, got {_shown(value)}")
        value = float(stripped)
    if not isinstance(value, float):
        raise InvalidValue(f"must be a number, got {type(value).__name__} {_shown(value)}")
    if not math.isfinite(value):
        raise InvalidValue(f"must be a finite number, got {_shown(value)}")
    return value


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and ``noun``, the noun in the plural unless the number is 1: ``counted(1, "document")`` is
    "1 document", ``counted(2, "entity")`` "2 entities", ``counted(0, "span")`` "0 spans". Every count a
    person reads (command output, log lines, page subtitles) is said this way.

    Args:
        noun: the singular; its last word takes the plural ending ("predicted span" -> "predicted spans").
        plural: the plural where the rule is wrong (the rule: a consonant + y -> ies; s, x, z, ch, sh -> es;
            otherwise s).
    """
    if number == 1:
        return f"{number} {noun}"
    if plural is None:
        if re.search(r"[^aeiou]y$", noun):
            plural = noun[:-1] + "ies"
        elif re.search(r"(s|x|z|ch|sh)$", noun):
            plural = noun + "es"
        else:
            plural = noun + "s"
    return f"{number} {plural}"


def _json_int(digits: str) -> int:
    if len(digits) > MAX_NUMBER_TEXT:
        raise InvalidValue(f"a {len(digits.lstrip('-'))}-digit integer is not a number cardioner reads")
    return as_int(digits)


def _json_float(digits: str) -> float:
    if len(digits) > MAX_NUMBER_TEXT:
        raise InvalidValue(f"a {len(digits)}-character number is not a number cardioner reads")
    return as_float(digits)


def _json_constant(name: str) -> float:
    raise InvalidValue(f"{name} is not a JSON number (JSON has no infinities and no NaN)")


def _check_text(value: Any) -> None:
    """Raise InvalidValue for a string holding half of a UTF-16 surrogate pair (no file can store it)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            half = value[error.start]
            raise InvalidValue(f"\\u{ord(half):04x} is half of a UTF-16 surrogate pair, not a character "
                               f"(in {value[:40]!r})") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def loads_json(text: str) -> Any:
    """``json.loads`` that refuses ``Infinity``/``NaN``, integers beyond MAX_INT, floats that overflow and
    escaped lone surrogates (``"\\ud81e"``: JSON can spell them, UTF-8 cannot store them).

    Raises:
        json.JSONDecodeError: not JSON.
        InvalidValue: a number no offset or setting can be, a lone surrogate, or nesting too deep to be data
            (the message says).
    """
    try:
        value = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
        if "\\u" in text:  # only an escape can make a surrogate: text read from a file is valid UTF-8
            _check_text(value)
        return value
    except RecursionError:
        raise InvalidValue("nested too deeply to be data") from None
