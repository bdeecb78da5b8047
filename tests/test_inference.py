"""inference.py at collection scale: ``predict`` streams (peak memory does not grow with the number of
documents), a run killed with SIGKILL and resumed writes the bytes of an uninterrupted one (JSONL, TSV, brat),
every output format carries span confidences, ``--min-confidence`` leaves out the spans below it, and
``evaluate`` reports how well the confidences are calibrated (ECE and a reliability diagram)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from noisy_export import noisy_tiny_export
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.data import read_corpus
from cardioner.data.resumable import partial_folder
from cardioner.errors import ConfigError, CorpusError
from cardioner.inference import evaluate_path, load_predictor, predict_path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"
CHUNK = 50  # documents per chunk (and commit) in these tests

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return noisy_tiny_export(tmp_path_factory.mktemp("export"))


def sentences() -> list[str]:
    """Sentences of the sample abstracts (disease names the noisy export tags, or not)."""
    found = []
    for path in sorted((SAMPLE / "test").glob("*.txt")):
        found += [s.strip() + "." for s in path.read_text(encoding="utf-8").split(". ") if 40 < len(s) < 200]
    return found


def write_notes(path: Path, count: int) -> Path:
    """``count`` generated documents as JSONL (ids n00000...), two sentences each, written line by line."""
    pool = sentences()
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            text = f"{pool[i % len(pool)]} {pool[(7 * i + 3) % len(pool)]} Case {i}."
            handle.write(json.dumps({"id": f"n{i:05d}", "text": text}) + "\n")
    return path


def predict_command(export: Path, notes: Path, output: Path, format: str, *extra: str,
                    chunk: int = CHUNK) -> list[str]:
    return [sys.executable, "-m", "cardioner", "predict", "--model", str(export), "--input", str(notes),
            "--output", str(output), "--format", format, "--chunk-size", str(chunk), "--show", "0", *extra]


def run_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1"}


def peak_rss_mib(args: list[str], log: Path) -> float:
    """Run ``args`` to its end in a process of its own (its output into ``log``: a pipe nobody reads would
    fill and block it); its peak resident memory (MiB)."""
    with open(log, "wb") as handle:
        process = subprocess.Popen(args, env=run_env(), stdout=handle, stderr=handle)
        _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, log.read_text(errors="replace")[-2000:]
    return usage.ru_maxrss / 1024


@pytest.mark.parametrize("count", [pytest.param(1_000, id="1000"),
                                   pytest.param(20_000, id="20000", marks=pytest.mark.slow)])
def test_predict_streams_documents_in_memory_that_does_not_grow_with_their_number(export, tmp_path, count):
    few = write_notes(tmp_path / "few.jsonl", 200)
    many = write_notes(tmp_path / "many.jsonl", count)
    small = peak_rss_mib(predict_command(export, few, tmp_path / "few-out.jsonl", "jsonl"),
                         tmp_path / "few.log")
    large = peak_rss_mib(predict_command(export, many, tmp_path / "many-out.jsonl", "jsonl"),
                         tmp_path / "many.log")
    with open(tmp_path / "many-out.jsonl", encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == count
    # ids are remembered as 8-byte digests (repeated ids are refused): ~0.2 MiB per 1,000 documents at most
    allowed = small * 1.03 + 2 + 0.2 * count / 1000
    assert large <= allowed, f"{count} documents: {large:.0f} MiB; 200: {small:.0f} MiB"


def output_bytes(path: Path) -> dict[str, bytes]:
    """A file's bytes, or every file of a folder by its relative path."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def kill_after_commits(args: list[str], journal: Path, commits: int) -> None:
    """Start ``args`` and SIGKILL it once its journal records ``commits`` commits (after the header's)."""
    process = subprocess.Popen(args, env=run_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if journal.is_file() and journal.read_text(encoding="utf-8").count('"ids"') > commits:
                break
            time.sleep(0.005)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -9, "the run ended before it could be killed half way"


@pytest.mark.parametrize("format", ["jsonl", "tsv", "brat"])
def test_a_run_killed_with_sigkill_and_resumed_writes_the_bytes_of_an_uninterrupted_run(export, tmp_path,
                                                                                        format):
    notes = write_notes(tmp_path / "notes.jsonl", 300)
    suffix = "" if format == "brat" else f".{format}"
    whole, resumed = tmp_path / f"whole{suffix}", tmp_path / f"resumed{suffix}"
    notes_flag = ["--score-notes"] if format == "brat" else []
    predict_path(export, notes, whole, format, chunk_size=10, score_notes=format == "brat")

    kill_after_commits(predict_command(export, notes, resumed, format, *notes_flag, chunk=10),
                       partial_folder(resumed) / "journal", commits=2)
    assert partial_folder(resumed).is_dir() and not resumed.exists()  # nothing published half done
    again = predict_command(export, notes, resumed, format, *notes_flag, chunk=10)[3:]
    refused = CliRunner().invoke(app, again)
    assert refused.exit_code == 1 and "--resume" in refused.stderr  # never discarded silently
    resume = predict_command(export, notes, resumed, format, *notes_flag, "--resume", chunk=10)[3:]
    result = CliRunner().invoke(app, resume)
    assert result.exit_code == 0, result.output
    assert "of them by the interrupted run" in result.stdout

    assert not partial_folder(resumed).exists()
    expected, got = output_bytes(whole), output_bytes(resumed)
    assert len(expected) == (601 if format == "brat" else 1) and got == expected  # brat: and its record


def test_every_output_format_carries_span_confidences(export, tmp_path):
    notes = write_notes(tmp_path / "notes.jsonl", 120)
    predict_path(export, notes, tmp_path / "out.jsonl", "jsonl", chunk_size=CHUNK)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    spans = [span for record in records for span in record["spans"]]
    assert len(spans) > 20 and all(0.0 <= span["score"] <= 1.0 for span in spans)

    predict_path(export, notes, tmp_path / "out.tsv", "tsv", chunk_size=CHUNK)
    rows = [line.split("\t") for line in (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["filename", "label", "start_span", "end_span", "text", "score"]
    assert len(rows) == len(spans) + 1 and all(0.0 <= float(row[5]) <= 1.0 for row in rows[1:])
    tsv_docs, _ = read_corpus(tmp_path / "out.tsv", format="tsv")
    assert all(span.score is not None for doc in tsv_docs for span in doc.spans)

    predict_path(export, notes, tmp_path / "brat", "brat", chunk_size=CHUNK, score_notes=True)
    ann = "".join(path.read_text(encoding="utf-8") for path in sorted((tmp_path / "brat").glob("*.ann")))
    entities = [line for line in ann.splitlines() if line.startswith("T")]
    notes_lines = [line for line in ann.splitlines() if line.startswith("#")]
    assert len(entities) == len(spans) == len(notes_lines)
    for line in notes_lines:
        _, target, note = line.split("\t")
        assert target.startswith("AnnotatorNotes T") and 0.0 <= float(note.removeprefix("confidence ")) <= 1.0

    predict_path(export, notes, tmp_path / "page.html", "html")  # the page shows each confidence on hover
    assert (tmp_path / "page.html").read_text(encoding="utf-8").count("data-score=") == len(spans)


def test_min_confidence_leaves_out_exactly_the_spans_below_it(export, tmp_path):
    notes = write_notes(tmp_path / "notes.jsonl", 100)
    every, kept = tmp_path / "every.jsonl", tmp_path / "kept.jsonl"
    for output, extra in ((every, []), (kept, ["--min-confidence", "0.6"])):
        result = CliRunner().invoke(app, predict_command(export, notes, output, "jsonl", *extra)[3:])
        assert result.exit_code == 0, result.output
    def spans(path: Path) -> list[tuple]:
        records = map(json.loads, path.read_text(encoding="utf-8").splitlines())
        return [(r["id"], s["start"], s["end"], s["label"], s["score"]) for r in records for s in r["spans"]]

    all_spans, high = spans(every), spans(kept)
    assert high == [span for span in all_spans if span[4] >= 0.6]
    assert 0 < len(high) < len(all_spans)
    result = CliRunner().invoke(app, predict_command(export, notes, tmp_path / "x.jsonl", "jsonl",
                                                     "--min-confidence", "1.5")[3:])
    assert result.exit_code == 1 and "--min-confidence must be in [0, 1]" in result.stderr
    result = CliRunner().invoke(app, predict_command(export, notes, tmp_path / "x.jsonl", "jsonl",
                                                     "--dtype", "float16")[3:])
    assert result.exit_code == 1 and "--dtype must be one of auto, float32, bfloat16" in result.stderr


def test_evaluate_reports_the_calibration_of_span_confidences_with_a_reliability_diagram(export, tmp_path):
    scores = evaluate_path(export, SAMPLE / "test", output=tmp_path / "scores.json",
                           reliability=tmp_path / "reliability.png")
    calibrated = scores["calibration"]
    assert 0.0 <= calibrated["ece"] <= 1.0
    assert calibrated["spans"] == scores["micro"]["tp"] + scores["micro"]["fp"]
    assert sum(row["spans"] for row in calibrated["bins"]) == calibrated["spans"]
    assert (tmp_path / "reliability.png").read_bytes().startswith(b"\x89PNG")
    written = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert written["calibration"]["ece"] == calibrated["ece"]


@pytest.mark.parametrize(("content", "described"), [
    ("{", "is not valid JSON"), ('["bert"]', "holds no JSON object"),
    ('{"model_type": "bert"}', "describes a 'bert' model"),
])
def test_a_model_folder_whose_config_is_not_an_export_says_what_it_holds(tmp_path, content, described):
    (tmp_path / "config.json").write_text(content, encoding="utf-8")  # a damaged copy said "a None model"
    with pytest.raises(ConfigError, match=f"not an exported model folder \\(its config.json {described}"):
        load_predictor(tmp_path)


GOLD_ANN = "T1\tX 0 5\tHello\nR1\tRel Arg1:T1 Arg2:T1\n#1\tAnnotatorNotes T1\tchecked\n"


def test_predict_to_brat_never_replaces_annotations_it_did_not_write(export, tmp_path):
    gold = tmp_path / "g"  # a gold .ann beside its text, the folder given as input and output
    gold.mkdir()
    (gold / "a.txt").write_text("Hello big world.", encoding="utf-8")
    (gold / "a.ann").write_text(GOLD_ANN, encoding="utf-8")
    before = output_bytes(gold)
    with pytest.raises(CorpusError, match=r"g/a.ann: exists and cardioner's record \(.cardioner.jsonl\) does "
                       "not show it wrote these bytes .* write to another output folder"):
        predict_path(tmp_path / "no-model", gold, gold, "brat")  # refused before any model loads
    result = CliRunner().invoke(app, predict_command(export, gold, gold, "brat")[3:])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "a.ann" in result.stderr
    assert output_bytes(gold) == before
    notes = tmp_path / "notes"  # plain texts: each .ann written beside its .txt, then replaced (ours)
    notes.mkdir()
    for i, sentence in enumerate(sentences()[:4]):
        (notes / f"n{i}.txt").write_text(sentence, encoding="utf-8")
    (notes / "README.md").write_text("my notes", encoding="utf-8")
    texts = output_bytes(notes)
    predict_path(export, notes, notes, "brat")
    first = output_bytes(notes)
    assert {name: first[name] for name in texts} == texts
    assert "n3.ann" in first and ".cardioner.jsonl" in first
    predict_path(export, notes, notes, "brat", score_notes=True)  # other bytes: our own output replaced
    second = output_bytes(notes)
    assert "AnnotatorNotes" in second["n0.ann"].decode() and second["n0.ann"] != first["n0.ann"]
    (notes / "n2.ann").write_text("T1\tDisease 0 4\tcorrected\n", encoding="utf-8")  # an annotator's fix
    edited = output_bytes(notes)
    with pytest.raises(CorpusError, match=r"notes/n2.ann: exists and cardioner's record"):
        predict_path(export, notes, notes, "brat")
    assert output_bytes(notes) == edited
    elsewhere = tmp_path / "predicted"  # an output folder of its own: written, then replaced
    predict_path(export, notes, elsewhere, "brat")
    predict_path(export, notes, elsewhere, "brat", score_notes=True)
    assert output_bytes(elsewhere)["n0.ann"] == second["n0.ann"]


def test_predict_to_brat_refuses_a_folder_that_only_looks_like_brat(tmp_path):
    project, notes = tmp_path / "P", tmp_path / "nd"  # a .txt somewhere below does not make it an output
    (project / "docs").mkdir(parents=True)
    (project / "docs" / "readme.txt").write_text("hi\n", encoding="utf-8")
    (project / "notes.md").write_text("mine\n", encoding="utf-8")
    notes.mkdir()
    (notes / "x.txt").write_text("Aspirin daily.", encoding="utf-8")
    before = output_bytes(project)
    with pytest.raises(CorpusError, match=r"P: the output is a folder that is neither empty nor a brat "
                       r"folder cardioner wrote \(one holding its record, .cardioner.jsonl\)"):
        predict_path(tmp_path / "no-model", notes, project, "brat")
    assert output_bytes(project) == before


def test_outputs_inside_a_model_folder_are_refused_before_the_model_loads(export, tmp_path):
    """predict, evaluate and calibrate write nothing into an export folder, where the next export would delete
    it and a push would upload it with the model."""
    notes = write_notes(tmp_path / "notes.jsonl", 2)
    inside = export / "predictions"
    with pytest.raises(CorpusError, match=r"predictions.jsonl: lies inside the model folder .*choose an"):
        predict_path(export, notes, inside / "predictions.jsonl", "jsonl")
    with pytest.raises(CorpusError, match=r"lies inside the model folder"):
        predict_path(export, notes, export / "brat", "brat")
    with pytest.raises(CorpusError, match=r"scores.json: lies inside the model folder"):
        evaluate_path(export, SAMPLE / "test", output=export / "scores.json")
    result = CliRunner().invoke(app, ["calibrate", "--model", str(export), "--data", str(SAMPLE / "dev"),
                                      "--output", str(export / "fit.json")])
    assert result.exit_code == 1 and "lies inside the model folder" in result.stderr
    assert not inside.exists() and not [p for p in export.iterdir() if p.name in ("brat", "scores.json",
                                                                                   "fit.json")]
