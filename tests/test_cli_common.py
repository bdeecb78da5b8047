"""The command line's error boundary (issue 15, items 6 and 7): a user error is one line and exit 1, a bug
says it is one (exit 70) with the CARDIONER_DEBUG hint, and no traceback reaches the user unless asked for."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.cli.common import INTERNAL_ERROR_EXIT
from cardioner.data import CorpusError
from cardioner.data.resumable import partial_folder

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"


def convert(tmp_path: Path, env: dict | None = None):
    return CliRunner().invoke(
        app,
        ["convert", "--input", str(SAMPLE / "dev"), "--output", str(tmp_path / "o.jsonl"), "--to", "jsonl"],
        env=env,
    )


def one_line(result, prefix: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


# a bug inside cardioner's code: Python raises the ValueError, no check of cardioner's does
_CARDIONER_CODE = {"__name__": "cardioner.buggy"}
exec("def bad_unpacking(*args, **kwargs):\n    first, second = [1]\n", _CARDIONER_CODE)
bad_unpacking = _CARDIONER_CODE["bad_unpacking"]


@pytest.mark.parametrize(
    ("failure", "code", "prefix", "fragment"),
    [
        (CorpusError("bad row", "a.tsv", 3), 1, "error:", "a.tsv:3: bad row"),
        (PermissionError(13, "Permission denied", "/out/x.jsonl"), 1, "error:",
         "/out/x.jsonl: Permission denied"),
        (KeyError("label2id"), INTERNAL_ERROR_EXIT,
         "internal error (a bug in cardioner): KeyError: 'label2id'", "CARDIONER_DEBUG=1"),
        (TypeError("'int' object is not iterable"), INTERNAL_ERROR_EXIT, "internal error", "TypeError"),
        (bad_unpacking, INTERNAL_ERROR_EXIT, "internal error", "ValueError: not enough values to unpack"),
    ],
)
def test_user_errors_exit_1_and_bugs_say_they_are_bugs(
    tmp_path, monkeypatch, failure, code, prefix, fragment
):
    def fails(*args, **kwargs):
        raise failure

    monkeypatch.setattr("cardioner.data.io.read_corpus", failure if failure is bad_unpacking else fails)
    result = convert(tmp_path)
    assert result.exit_code == code, result.output
    assert fragment in one_line(result, prefix)


def test_a_deliberate_value_error_of_the_library_is_a_user_error(tmp_path):
    result = CliRunner().invoke(
        app, ["convert", "--input", str(SAMPLE / "dev"), "--output", str(tmp_path / "o"), "--to", "xml"]
    )
    assert result.exit_code == 1 and "--to must be one of" in one_line(result, "error:")


def test_cardioner_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr("cardioner.data.io.read_corpus", lambda *a, **k: {}["missing"])
    result = convert(tmp_path, env={"CARDIONER_DEBUG": "1"})
    assert isinstance(result.exception, KeyError)  # raised through: Typer prints the traceback


def test_usage_errors_stay_short_typer_messages():
    result = CliRunner().invoke(app, ["train", "--epochs", "abc"])
    assert result.exit_code == 2 and "Invalid value for '--epochs'" in result.output
    assert "Traceback" not in result.output


def test_lr_inf_is_refused_before_any_training(tmp_path, monkeypatch):
    def run_training(config):
        raise AssertionError("training started")

    monkeypatch.setattr("cardioner.training.run_training", run_training)
    for value in ("inf", "nan", "-inf"):
        result = CliRunner().invoke(app, ["train", "--train", str(SAMPLE / "train"), "--lr", value,
                                          "--output", str(tmp_path / "out")])
        assert result.exit_code == 1, result.output
        assert "command line: --lr must be" in one_line(result, "error:")
    assert not (tmp_path / "out").exists()


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)),
        encoding="utf-8")
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["train", "--config", str(bomb)])
    assert result.exit_code == 1 and "more than 16 YAML aliases" in one_line(result, "error:")
    assert time.perf_counter() - started < 30


def test_a_300_character_path_is_one_line_in_a_real_process(tmp_path):
    """Run as a user does (``python -m cardioner``): the existence check sits inside the boundary."""
    long_path = str(tmp_path / ("x" * 300))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CARDIONER_DEBUG", None)
    for args in (["train", "--train", long_path, "--output", str(tmp_path / "out")],
                 ["convert", "--input", long_path, "--output", str(tmp_path / "o.jsonl"), "--to", "jsonl"],
                 ["convert", "--input", str(SAMPLE / "dev"), "--output", long_path, "--to", "jsonl"]):
        result = subprocess.run(
            [sys.executable, "-m", "cardioner", *args], env=env, capture_output=True, text=True, cwd=tmp_path
        )
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "internal error"))]
        assert (
            len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr
        ), result.stderr
        assert "too long" in lines[0].lower(), lines[0]


def _load_report(*statuses: str) -> logging.LogRecord:
    rows = "".join(f"layer.{n}.weight | \x1b[33m{status}\x1b[0m |  | \n" for n, status in enumerate(statuses))
    message = (f"\x1b[1mBertModel LOAD REPORT\x1b[0m from: bert\nKey | Status |  | \n----+----+--+-\n{rows}"
               "\nNotes:\n- UNEXPECTED:\tcan be ignored when loading from different task/architecture")
    return logging.LogRecord("transformers.modeling_utils", logging.WARNING, "x.py", 1, message, None, None)


def test_library_noise_is_held_back_unless_verbose(caplog):
    """Issue 21 (noise on every run): a load report of unused checkpoint weights only is held back, one with
    MISSING weights shows; Ctrl-C's trial traceback from Optuna goes, other trial failures keep their line
    without the traceback; Optuna's experimental-feature warnings are held back; --verbose shows it all."""
    from cardioner.cli.common import LibraryNoise, setup_logging

    noise = LibraryNoise()
    assert not noise.filter(_load_report("UNEXPECTED", "UNEXPECTED"))
    assert noise.filter(_load_report("UNEXPECTED", "MISSING"))
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = logging.LogRecord("optuna.study._optimize", logging.WARNING, "x.py", 1,
                                        "Trial 1 failed with parameters: {} because of the following error: "
                                        "KeyboardInterrupt().", None, sys.exc_info())
    assert not noise.filter(interrupted)
    assert not noise.filter(logging.LogRecord("optuna.study._optimize", logging.WARNING, "x.py", 1,
                                              "Trial 1 failed with value None.", None, None))
    try:
        raise ValueError("focal_gamma")
    except ValueError:
        failed = logging.LogRecord("optuna.study._optimize", logging.WARNING, "x.py", 1, "Trial 2 failed",
                                   None, sys.exc_info())
    assert noise.filter(failed) and failed.exc_info is None

    with warnings.catch_warnings(record=True) as caught:
        setup_logging(verbose=False)
        warnings.warn("plot_optimization_history is experimental (supported from v2.2.0).", UserWarning,
                      stacklevel=1)
        with caplog.at_level(logging.WARNING):
            logging.getLogger("transformers.modeling_utils").warning(_load_report("UNEXPECTED").msg)
        assert not caught and "LOAD REPORT" not in caplog.text
        setup_logging(verbose=True)
        warnings.warn("plot_optimization_history is experimental (supported from v2.2.0).", UserWarning,
                      stacklevel=1)
        with caplog.at_level(logging.WARNING):
            logging.getLogger("transformers.modeling_utils").warning(_load_report("UNEXPECTED").msg)
        assert len(caught) == 1 and "LOAD REPORT" in caplog.text
    setup_logging(verbose=False)


@pytest.mark.parametrize("command", ["predict", "evaluate", "convert"])
def test_ctrl_c_in_a_command_that_writes_says_nothing_was_written(command, tmp_path, monkeypatch):
    """Issue 21: Ctrl-C in any command ends with one line (exit 130) that says what was kept."""
    import cardioner.data.io
    import cardioner.inference

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    for module, name in ((cardioner.inference, "predict_path"), (cardioner.inference, "evaluate_path"),
                         (cardioner.data.io, "convert_corpus")):
        monkeypatch.setattr(module, name, interrupted)
    output = tmp_path / "out.jsonl"
    args = {"predict": ["--model", "m", "--input", "in", "--output", str(output)],
            "evaluate": ["--model", "m", "--data", "d", "--output", str(output)],
            "convert": ["--input", "in", "--output", str(output), "--to", "jsonl"]}[command]
    result = CliRunner().invoke(app, [command, *args])
    assert result.exit_code == 130
    assert one_line(result, "interrupted: ") == (
        f"interrupted: {output} was not written (outputs are written whole or not at all); rerun the command")
    if command == "predict":  # predict writes as it goes: what an interrupted run wrote is kept for --resume
        partial_folder(output).mkdir()
        result = CliRunner().invoke(app, [command, *args])
        assert result.exit_code == 130
        assert one_line(result, "interrupted: ") == (
            f"interrupted: {output} is not complete (the documents written so far are kept); rerun the same "
            "command with --resume to go on where it stopped")
