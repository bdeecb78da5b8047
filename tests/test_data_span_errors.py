"""``data.span_errors = error | skip | realign`` (issue 15, item 10): a release with a few shifted spans is
refused naming the option, read without them (counted), or read with each moved to its annotated string (each
move reported) — in every reader that checks annotated strings, and through train, convert and evaluate."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from tiny import tiny_backbone
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.config import ConfigError, load_config
from cardioner.data import CorpusError, Span, read_corpus, write_corpus
from cardioner.data.common import REALIGN_WINDOW, REALIGNED_NOTE, SKIPPED_NOTE, UNPLACED_NOTE

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"
TEXT = "El paciente refiere dolor torácico y fiebre alta desde ayer."
#            0         1         2         3         4         5
#            0123456789012345678901234567890123456789012345678901234567


def brat_folder(tmp_path: Path, ann: str, text: str = TEXT) -> Path:
    folder = tmp_path / "brat"
    folder.mkdir(exist_ok=True)
    (folder / "doc.txt").write_text(text, encoding="utf-8")
    (folder / "doc.ann").write_text(ann, encoding="utf-8")
    return folder


SHIFTED = ("T1\tSINTOMA 22 36\tdolor torácico\n"  # two characters too far right: 20-34
           "#1\tAnnotatorNotes T1\tshifted\n"
           "T2\tSINTOMA 37 48\tfiebre alta\n"  # right
           "T3\tSINTOMA 0 8\tpaciente\n")  # three characters too far left: 3-11


def test_error_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(
        CorpusError,
        match=r"doc\.ann:1: annotated string 'dolor torácico' != text\[22 36\] "
        r"'lor torácico y'; set data.span_errors=skip .* or data.span_errors=realign",
    ):
        read_corpus(brat_folder(tmp_path, SHIFTED))


def test_skip_leaves_the_spans_out_and_counts_them(tmp_path: Path) -> None:
    docs, report = read_corpus(brat_folder(tmp_path, SHIFTED), span_errors="skip")
    assert docs[0].spans == [Span(37, 48, "SINTOMA")]
    assert report.skipped[SKIPPED_NOTE] == 2 and report.spans == 1
    assert f"skipped: 2 {SKIPPED_NOTE}" in report.summary()
    write_corpus(docs, tmp_path / "out", "brat")  # the note on the dropped T1 goes with it, counted
    assert (tmp_path / "out" / "doc.ann").read_text() == "T2\tSINTOMA 37 48\tfiebre alta\n"


def test_realign_moves_each_span_to_its_string_nearby_and_reports_each_move(tmp_path: Path) -> None:
    docs, report = read_corpus(brat_folder(tmp_path, SHIFTED), span_errors="realign")
    assert docs[0].spans == [Span(20, 34, "SINTOMA"), Span(37, 48, "SINTOMA"), Span(3, 11, "SINTOMA")]
    assert report.repaired[REALIGNED_NOTE] == 2
    assert [move.split("doc.ann")[1] for move in report.moves] == [
        ":1: SINTOMA 22-36 -> 20-34 (-2) 'dolor torácico'", ":4: SINTOMA 0-8 -> 3-11 (+3) 'paciente'"]
    summary = report.summary()
    assert all(f"moved: {move}" in summary for move in report.moves)
    write_corpus(docs, tmp_path / "out", "brat")  # brat ids and notes stay on their (moved) entities
    assert (tmp_path / "out" / "doc.ann").read_text().startswith(
        "T1\tSINTOMA 20 34\tdolor torácico\n#1\tAnnotatorNotes T1\tshifted\n")


def test_realign_takes_the_nearest_occurrence_and_leaves_out_a_string_not_nearby(tmp_path: Path) -> None:
    text = "fiebre, fiebre y " + "x" * 40 + " tos"
    # 9-15: 'iebre ' -> 8-14 (-1) beats 0-6 (-9); 'tos' is 56 away
    ann = "T1\tS 9 15\tfiebre\nT2\tS 2 5\ttos\n"
    docs, report = read_corpus(brat_folder(tmp_path, ann, text), span_errors="realign")
    assert docs[0].spans == [Span(8, 14, "S")]
    assert report.skipped[UNPLACED_NOTE] == 1 and f"within {REALIGN_WINDOW} characters" in UNPLACED_NOTE


def test_realign_moves_a_discontinuous_span_as_a_whole(tmp_path: Path) -> None:
    docs, report = read_corpus(brat_folder(tmp_path, "T1\tSINTOMA 21 26;38 44\tdolor fiebre\n"),
                               span_errors="realign")
    assert docs[0].spans == [Span(20, 43, "SINTOMA", ((20, 25), (37, 43)))] and len(report.moves) == 1


def test_tsv_rows_follow_the_policy(tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "doc.txt").write_text(TEXT, encoding="utf-8")
    tsv = tmp_path / "a.tsv"
    tsv.write_text("filename\tlabel\tstart_span\tend_span\ttext\ndoc\tSINTOMA\t38\t49\tfiebre alta\n"
                   "doc\tSINTOMA\t37\t48\tfiebre alta\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"a\.tsv:2: annotated string .*data\.span_errors=skip"):
        read_corpus(tsv, texts_dir=tmp_path / "texts")
    docs, report = read_corpus(tsv, texts_dir=tmp_path / "texts", span_errors="realign")
    assert docs[0].spans == [Span(37, 48, "SINTOMA")]  # moved onto the row below: read once
    assert len(report.moves) == 1 and "a.tsv:2: SINTOMA 38-49 -> 37-48 (-1)" in report.moves[0]


def test_jsonl_spans_with_text_follow_the_policy_and_those_past_the_end_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"id": "a", "text": TEXT, "spans": [
        {"start": 21, "end": 35, "label": "S", "text": "dolor torácico"},
        {"start": 58, "end": 70, "label": "S"}]}) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"a\.jsonl:1: .*data\.span_errors"):
        read_corpus(path)
    docs, report = read_corpus(path, span_errors="realign")
    assert docs[0].spans == [Span(20, 34, "S")] and len(report.moves) == 1
    assert report.skipped[UNPLACED_NOTE] == 1  # past the end, no string to look for


def test_the_policy_is_a_config_key_with_its_choices() -> None:
    assert load_config(None, {"data.span_errors": "realign"}).data.span_errors == "realign"
    with pytest.raises(ConfigError, match="data.span_errors must be one of error, skip, realign"):
        load_config(None, {"data.span_errors": "fix"})
    with pytest.raises(ConfigError, match="data.span_errors must be one of error, skip, realign"):
        read_corpus(SAMPLE / "dev", span_errors="fix")


def test_convert_prints_each_move(tmp_path: Path) -> None:
    folder = brat_folder(tmp_path, SHIFTED)
    runner = CliRunner()
    result = runner.invoke(
        app, ["convert", "-i", str(folder), "-o", str(tmp_path / "o.jsonl"), "--to", "jsonl"]
    )
    assert result.exit_code == 1 and "data.span_errors" in result.stderr
    result = runner.invoke(
        app,
        ["convert", "-i", str(folder), "-o", str(tmp_path / "o.jsonl"), "--to", "jsonl", "--span-errors",
         "realign"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("moved: ") == 2 and "22-36 -> 20-34 (-2)" in result.output


def shifted_corpus(tmp_path: Path) -> tuple[Path, list[str]]:
    """Twelve NCBI sample documents, three spans of them
    shifted by one or two characters (with the text kept)."""
    corpus = tmp_path / "shifted"
    corpus.mkdir()
    names = sorted(p.stem for p in (SAMPLE / "train").glob("*.txt"))[:12]
    for name in names:
        for suffix in (".txt", ".ann"):
            shutil.copy(SAMPLE / "train" / f"{name}{suffix}", corpus / f"{name}{suffix}")
    shifted = []
    for name, shift in zip(names[:3], (1, -2, 2), strict=True):
        lines = (corpus / f"{name}.ann").read_text(encoding="utf-8").splitlines(keepends=True)
        for i, line in enumerate(lines):
            if line.startswith("T") and ";" not in line.split("\t")[1]:
                ann_id, head, string = line.rstrip("\n").split("\t")
                label, start, end = head.split(" ")
                lines[i] = f"{ann_id}\t{label} {int(start) + shift} {int(end) + shift}\t{string}\n"
                shifted.append(
                    f"{name}.ann:{i + 1}: {label} {int(start) + shift}-{int(end) + shift} -> {start}-{end}"
                )
                break
        (corpus / f"{name}.ann").write_text("".join(lines), encoding="utf-8")
    return corpus, shifted


@pytest.mark.usefixtures("one_thread")
def test_realign_trains_end_to_end_and_reports_each_move(tmp_path: Path, caplog) -> None:
    """Done-when 4: train on a corpus with shifted spans with --set
    data.span_errors=realign (tiny BERT, a few steps): refused without it, trained
    and exported with it, every move in the log; evaluate takes the option."""
    corpus, shifted = shifted_corpus(tmp_path)
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    args = ["train", "--train", str(corpus), "--dev", str(SAMPLE / "dev"), "--model", str(backbone),
            "--output", str(tmp_path / "model"), "--epochs", "1", "--max-length", "64", "--batch-size", "8",
            "--set", "training.max_steps=3", "--set", "training.patience=0"]
    runner = CliRunner()
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "data.span_errors" in refused.stderr
    with caplog.at_level(logging.INFO, logger="cardioner"):
        result = runner.invoke(app, [*args, "--set", "data.span_errors=realign"])
    assert result.exit_code == 0, result.output + result.stderr
    log = "\n".join(record.getMessage() for record in caplog.records)
    for move in shifted:
        assert move in log, (move, log[:2000])
    assert (tmp_path / "model" / "config.json").is_file()
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "model"), "--data", str(corpus),
                                 "--span-errors", "skip"])
    assert result.exit_code == 0, result.output + result.stderr
