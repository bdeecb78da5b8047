"""``cardioner convert``: MEDDOCAN brat -> JSONL -> brat byte-identical; clear errors with exit code 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cardioner.cli import app

runner = CliRunner()


def test_meddocan_brat_jsonl_brat_is_byte_identical(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "meddocan" / "dev"
    result = runner.invoke(app, ["convert", "--input", str(source), "--output", str(tmp_path / "dev.jsonl"),
                                 "--to", "jsonl"])
    assert result.exit_code == 0, result.output
    assert "read 250 documents, 5801 spans" in result.output
    result = runner.invoke(app, ["convert", "--input", str(tmp_path / "dev.jsonl"), "--output",
                                 str(tmp_path / "brat"), "--to", "brat", "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in source.iterdir())
    assert sorted(p.name for p in (tmp_path / "brat").iterdir()) == [".cardioner.jsonl", *names]  # + record
    for name in names:
        assert (tmp_path / "brat" / name).read_bytes() == (source / name).read_bytes(), name


def test_convert_to_conll_and_tsv(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "ct_ebm_sp" / "dev"
    result = runner.invoke(
        app, ["convert", "-i", str(source), "-o", str(tmp_path / "ct.conll"), "--to", "conll"]
    )
    assert result.exit_code == 1 and "overlapping spans" in result.output
    assert not (tmp_path / "ct.conll").exists() and not list(tmp_path.iterdir())  # nothing half-written
    result = runner.invoke(
        app,
        [
            "convert",
            "-i",
            str(source),
            "-o",
            str(tmp_path / "ct.conll"),
            "--to",
            "conll",
            "--resolve-overlaps",
        ],
    )
    assert result.exit_code == 0 and "overlapping spans dropped" in result.output
    result = runner.invoke(app, ["convert", "-i", str(source), "-o", str(tmp_path / "ct.tsv"), "--to", "tsv"])
    assert result.exit_code == 0
    assert (tmp_path / "ct.tsv").read_text(encoding="utf-8").count("\n") == 9629 + 1


def test_bad_input_exits_1_with_one_sentence_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "cardioner", "convert", "--input", str(tmp_path / "bad.jsonl"), "--output",
         str(tmp_path / "out.jsonl"), "--to", "jsonl"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'bad.jsonl'}:1: record lacks 'text' (keys: ['id'])"
    ]
    assert not (tmp_path / "out.jsonl").exists()


def test_unknown_output_format(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": "a", "text": "x"}\n', encoding="utf-8")
    result = runner.invoke(
        app, ["convert", "-i", str(tmp_path / "a.jsonl"), "-o", str(tmp_path / "o"), "--to", "xml"]
    )
    assert result.exit_code == 1 and "--to must be one of brat, conll, jsonl, tsv, got 'xml'" in result.output
