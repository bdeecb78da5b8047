"""benchmarks/context.py: kinds of sentence, scores by kind, the paired differences of --aggregate, and one
run end to end on a tiny backbone (sentences against context, predictions written, every sentence scored)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import load_script, tiny_backbone

from cardioner.data import Document, Span, read_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "context.py"

CONLL = """-DOCSTART- -X- -X- O

SOCCER NN B-NP O
- : O O
LEEDS NNP B-NP B-ORG
WIN VB B-VP O
. . O O

LONDON NNP B-NP B-LOC
1996-12-06 CD I-NP O

Leeds NNP B-NP B-ORG
2 CD I-NP O
Chelsea NNP B-NP B-ORG
0 CD I-NP O

-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


@pytest.fixture(scope="module")
def context():
    return load_script(SCRIPT, "context_benchmark")


@pytest.fixture
def documents(tmp_path) -> list[Document]:
    path = tmp_path / "mini.conll"
    path.write_text(CONLL, encoding="utf-8")
    docs, _ = read_corpus(path)
    return docs


def kinds(context, doc: Document) -> list[str]:
    return [context.sentence_kind(s.text, s.meta["tokens"]) for s in context.sentence_documents([doc])]


def test_sentences_are_datelines_table_rows_or_text(context, documents):
    assert kinds(context, documents[0]) == ["text", "dateline", "table"]
    assert kinds(context, documents[1]) == ["text", "text"]
    tokens = [[0, 6], [7, 17]]  # two tokens, one a date: a dateline only when the date is last
    assert context.sentence_kind("1996-12-06 London", [[0, 10], [11, 17]]) == "table"
    assert context.sentence_kind("LONDON 1996-12-06", tokens) == "dateline"
    assert context.sentence_kind("", []) == "text"


def test_scores_by_kind_score_each_kind_of_sentence_alone(context, documents):
    results = documents[0]
    leeds, chelsea = (s for s in results.spans if results.text[s.start:s.end] in ("Leeds", "Chelsea"))
    # the results row's teams read as places; everything else right
    wrong = [s for s in results.spans if s not in (leeds, chelsea)]
    wrong += [Span(leeds.start, leeds.end, "LOC"), Span(chelsea.start, chelsea.end, "LOC")]
    predicted = [Document(results.id, results.text, wrong), Document(documents[1].id, documents[1].text,
                                                                      documents[1].spans)]
    scores = context.scores_by_kind(documents, predicted)
    assert scores["table"] == {"sentences": 1, "gold_spans": 2, "f1": 0.0,
                               "per_type_f1": {"LOC": 0.0, "ORG": 0.0}, "relabelled": {"ORG->LOC": 2},
                               "outcomes": {"ORG": {"relabelled": 2}}}
    assert scores["dateline"]["f1"] == 100.0 and scores["dateline"]["gold_spans"] == 1
    assert scores["text"] == {"sentences": 3, "gold_spans": 4, "f1": 100.0, "relabelled": {},
                              "per_type_f1": {"MISC": 100.0, "ORG": 100.0, "PER": 100.0},
                              "outcomes": {"MISC": {"exact": 1}, "ORG": {"exact": 2}, "PER": {"exact": 1}}}


def test_gold_outcomes_tell_cut_names_from_wrong_types_and_misses(context):
    text = "NY JETS 1 12 Chelsea 0 Leeds 2 Bolton"
    gold = Document("d", text, [Span(0, 7, "ORG"), Span(13, 20, "ORG"), Span(23, 28, "ORG"),
                                Span(31, 37, "ORG")])
    predicted = Document("d", text, [Span(0, 2, "ORG"), Span(3, 7, "ORG"), Span(13, 20, "ORG"),
                                     Span(23, 28, "LOC"), Span(29, 30, "PER")])
    assert context.gold_outcomes([gold], [predicted]) == {
        "ORG": {"boundary": 1, "exact": 1, "missed": 1, "relabelled": 1}}
    other = Document("d", text, [Span(0, 4, "LOC")])
    assert context.gold_outcomes([gold], [other])["ORG"] == {"missed": 3, "other": 1}


def row(system: str, f1: float, per_type: dict, by_kind: dict) -> dict:
    return {"system": system, "test_f1": f1, "per_type_f1": per_type,
            "by_kind": {kind: {"f1": value} for kind, value in by_kind.items()}}


def test_aggregate_pairs_each_seed_with_its_own_sentences_run(context, tmp_path):
    files = {
        "s1.json": (1, [row("sentences", 70.0, {"ORG": 60.0}, {"table": 50.0}),
                        row("context=64", 71.0, {"ORG": 58.0}, {"table": 45.0})]),
        "s2.json": (2, [row("sentences", 72.0, {"ORG": 62.0}, {"table": 52.0})]),
        "c2.json": (2, [row("context=64", 71.5, {"ORG": 63.0}, {"table": 50.0})]),  # another file, same seed
        # no sentences run of seed 3: in the mean, not in the differences
        "c3.json": (3, [row("context=64", 90.0, {"ORG": 90.0}, {"table": 90.0})]),
    }
    for name, (seed, systems) in files.items():
        (tmp_path / name).write_text(json.dumps({"seed": seed, "systems": systems}), encoding="utf-8")
    summary = context.aggregate([str(tmp_path / name) for name in files])["systems"]
    assert summary["sentences"]["mean"] == 71.0 and "minus_sentences" not in summary["sentences"]
    ctx = summary["context=64"]
    assert ctx["seeds"] == [1, 2, 3] and ctx["mean"] == 77.5
    assert ctx["minus_sentences"] == {"values": [1.0, -0.5], "mean": 0.25, "sd": 1.06, "wins": 1, "losses": 1}
    assert ctx["minus_sentences_by"]["ORG"]["values"] == [-2.0, 1.0]
    assert ctx["minus_sentences_by"]["kind:table"]["mean"] == -3.5


def test_one_run_trains_both_systems_and_writes_their_predictions_which_rescore_the_same(tmp_path):
    data = tmp_path / "conll"
    data.mkdir()
    for name in ("train.txt", "test.txt"):
        (data / name).write_text(CONLL, encoding="utf-8")
    backbone = tiny_backbone("bert", tmp_path / "tiny")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(data), "--model", str(backbone), "--epochs", "1",
         "--max-length", "96", "--systems", "sentences,context=8", "--predictions", str(tmp_path / "pred")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["train_sentences"] == report["test_sentences"] == 5
    sentences, context = report["systems"]
    assert sentences["windows"] == {"train": 5, "test": 5}  # one window per sentence in both systems
    assert context["windows"] == {"train": 5, "test": 5} and context["context"] == 8
    files = []
    for system in (sentences, context):
        assert {kind: scores["sentences"] for kind, scores in system["by_kind"].items()} == {
            "dateline": 1, "table": 1, "text": 3}
        assert len(system["epoch_losses"]) == 1
        files.append(tmp_path / "pred" / f"{system['system']}-s42.jsonl")
        predicted, _ = read_corpus(files[-1])
        assert len(predicted) == (5 if system is sentences else 2)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(data), "--rescore", *map(str, files)],
        capture_output=True, text=True, timeout=120, check=True)
    rescored = json.loads(done.stdout)
    assert [rescored[path.name] for path in files] == [sentences["by_kind"], context["by_kind"]]
