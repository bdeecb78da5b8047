"""benchmarks/peers.py: the glue between the peers' outputs and cardioner's scorer (no peers), and the driver
end to end on one cardioner system with a tiny backbone."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import load_script, tiny_backbone

import cardioner
from cardioner.data import Document, Span, read_corpus
from cardioner.data.encoding import word_tags_to_spans
from cardioner.evaluation import score_spans
from cardioner.labels import tags_to_entities

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
"""


@pytest.fixture(scope="module")
def peers():
    return load_script(SCRIPT, "peers_benchmark")


@pytest.fixture
def documents(tmp_path):
    path = tmp_path / "mini.txt"
    path.write_text(CONLL, encoding="utf-8")
    docs, _ = read_corpus(path)
    return docs


def test_tag_decoding_matches_cardioner_on_random_tag_sequences(peers):
    tags = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"]
    rng = random.Random(0)
    for _ in range(2000):
        sequence = [rng.choice(tags) for _ in range(rng.randint(0, 12))]
        expected = [(first, last + 1, label) for first, last, label in tags_to_entities(sequence)]
        assert peers.tags_to_word_spans(sequence) == expected, sequence


def test_word_spans_become_the_character_spans_cardioner_decodes(peers):
    offsets = [[0, 2], [3, 10], [11, 17], [18, 22], [23, 24]]
    tags = ["B-ORG", "O", "I-MISC", "I-MISC", "O"]  # a repaired I- start, as a peer may emit it
    expected = [{"start": s.start, "end": s.end, "label": s.label} for s in word_tags_to_spans(offsets, tags)]
    assert peers.word_spans_to_char_spans(offsets, peers.tags_to_word_spans(tags)) == expected
    with pytest.raises(ValueError, match="outside a sentence of 5 words"):
        peers.word_spans_to_char_spans(offsets, [(4, 6, "ORG")])


def test_sentence_records_round_trip_to_a_perfect_score(peers, documents, tmp_path):
    records = peers.sentence_records(documents)
    assert [(r["doc"], r["sent"]) for r in records] == [("mini#1", 0), ("mini#1", 1), ("mini#2", 0),
                                                         ("mini#2", 1)]
    assert records[1]["tokens"] == ["Peter", "Blackburn"] and records[1]["tags"] == ["B-PER", "I-PER"]
    # A peer that predicts the gold tags writes JSONL that cardioner's scorer finds perfect.
    predictions = tmp_path / "predictions.jsonl"
    peers.write_predictions(predictions, records, [peers.tags_to_word_spans(r["tags"]) for r in records])
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["mini#1", "mini#2"]
    scores = score_spans(documents, {line["id"]: line["spans"] for line in lines})
    assert scores["micro"]["f1"] == 1.0 and scores["micro"]["tp"] == 5
    # One wrong label costs exactly one false positive and one false negative.
    row = {}
    peers.write_predictions(predictions, records, [[(0, 1, "LOC")], [], [], []])
    peers.score_row(row, documents, predictions)
    assert row["tp_fp_fn"] == [0, 1, 5] and row["test_f1"] == 0.0


def test_sentences_split_and_shift_back_to_document_offsets(peers, documents):
    sentences, shifts = peers.split_sentences(documents)
    assert [d.id for d in sentences] == ["mini#1@0", "mini#1@1", "mini#2@0", "mini#2@1"]
    for sentence in sentences:
        doc_id, shift = shifts[sentence.id]
        doc = next(d for d in documents if d.id == doc_id)
        for span in sentence.spans:
            assert doc.text[span.start + shift : span.end + shift] == sentence.text[span.start : span.end]
            assert Span(span.start + shift, span.end + shift, span.label) in doc.spans
    assert sum(len(s.spans) for s in sentences) == sum(len(d.spans) for d in documents)


def test_a_training_limit_cuts_inside_a_document_at_a_sentence_boundary(peers, documents):
    doc = peers.cut_document(documents[1], 1)
    assert doc.text == "BRUSSELS 1996-08-22" and doc.spans == [Span(0, 8, "LOC")]
    assert doc.meta["sentences"] == [[0, 2]] and len(doc.meta["tokens"]) == 2
    assert isinstance(doc, Document)


def test_system_specs_parse_built_ins_runners_and_overrides(peers):
    assert peers.parse_system("flair-crf") == ("flair-crf", "flair", {"use_crf": "true"})
    assert peers.parse_system("ctx=cardioner data.context=128 model.use_crf=true") == (
        "ctx", "cardioner", {"data.context": "128", "model.use_crf": "true"})
    assert peers.parse_system("fast=flair-crf decoder_lr=1e-3") == (
        "fast", "flair", {"use_crf": "true", "decoder_lr": "1e-3"})
    kernels = peers.parse_system("kernels=cardioner model.cnn_kernel_sizes=3,5,7")
    assert kernels[2] == {"model.cnn_kernel_sizes": "3,5,7"}
    with pytest.raises(ValueError, match="unknown system 'nope'"):
        peers.parse_system("nope")
    with pytest.raises(ValueError, match="flair has no option 'use_rnn'"):
        peers.parse_system("x=flair use_rnn=true")
    with pytest.raises(ValueError, match="unknown runner 'bert'"):
        peers.parse_system("x=bert")
    assert peers.runner_options("spanmarker", {"document_context": "true"})["entity_max_length"] == "8"


def run(corpus: str, seed: int, systems: dict) -> dict:
    rows = {}
    for name, (f1, train_speed) in systems.items():
        rows[name] = {"status": "ok", "test_f1": f1, "test_precision": f1 - 1, "test_recall": f1 + 1,
                      "train_sentences_per_second": train_speed, "predict_sentences_per_second": 100.0,
                      "train_sentences_per_cpu_second": 2 * train_speed,
                      "predict_sentences_per_cpu_second": 50.0,
                      "peak_rss_mb": 1000, "versions": {}}
    return {"corpus": corpus, "seed": seed, "epochs": 3, "lr": 1e-4, "batch_size": 16, "max_length": 256,
            "train_limit": 0, "test_limit": 0, "overrides": [], "train_sentences": 5432, "systems": rows}


def test_aggregate_means_sds_and_within_run_ratios(peers):
    other_budget = run("ncbi", 1, {"cardioner": (50.0, 1.0)})
    other_budget["epochs"] = 1
    runs = [other_budget, run("ncbi", 1, {"cardioner": (80.0, 40.0), "flair": (78.0, 20.0)}),
            run("ncbi", 2, {"cardioner": (82.0, 20.0), "flair": (79.0, 20.0)}),
            run("ncbi", 3, {"flair": (80.0, 99.0)}),  # no reference with this seed: no ratio from it
            run("ncbi", 2, {"spanmarker": (70.0, 2.0)})]  # same budget and seed, another file: merged
    runs[1]["systems"]["spacy"] = {"status": "not installed", "error": "..."}
    rows = peers.aggregate(runs)
    assert [(row["budget"], row["test_f1"]) for row in rows][0] == ("ncbi (5,432 sentences, 1 ep)", 50.0)
    table = {row["system"]: row for row in rows[1:]}
    assert set(table) == {"cardioner", "flair", "spanmarker"}
    assert table["spanmarker"]["train_ratio"] == 0.1
    assert table["cardioner"]["test_f1"] == 81.0
    assert table["cardioner"]["test_f1_sd"] == pytest.approx(1.41, abs=0.01)
    assert table["flair"]["seeds"] == [1, 2, 3] and table["flair"]["test_f1"] == 79.0
    assert table["flair"]["train_ratio"] == pytest.approx((0.5 + 1.0) / 2)
    assert table["flair"]["train_cpu_ratio"] == pytest.approx((0.5 + 1.0) / 2)
    assert table["flair"]["predict_cpu_ratio"] == 1.0
    assert table["cardioner"]["train_ratio"] == 1.0
    markdown = peers.markdown_table(peers.aggregate(runs))
    assert "| ncbi (5,432 sentences, 3 ep) | flair | 3 | 79.00 ± 1.00 |" in markdown and "(0.75×)" in markdown


def test_aggregate_reference_is_the_first_listed_system_that_ran_in_each_budget(peers):
    with_default = run("conll2003", 1, {"cardioner": (80.0, 10.0), "cardioner-sentences": (85.0, 20.0)})
    sentences_only = run("conll2003", 1, {"cardioner-sentences": (84.0, 20.0), "spanmarker": (86.0, 1.0)})
    sentences_only.update(train_limit=7000, train_sentences=7000)
    rows = peers.aggregate([with_default, sentences_only], reference="cardioner,cardioner-sentences")
    table = {(row["budget"], row["system"]): row for row in rows}
    references = {row["reference"] for row in rows if row["system"] != "spanmarker"}
    assert references == {"cardioner", "cardioner-sentences"}
    assert table["conll2003 (5,432 sentences, 3 ep)", "cardioner-sentences"]["train_ratio"] == 2.0
    spanmarker = next(row for row in rows if row["system"] == "spanmarker")
    assert spanmarker["reference"] == "cardioner-sentences" and spanmarker["train_ratio"] == 0.05
    # A reference that never ran in a budget gives no ratios there, not an error.
    assert peers.aggregate([sentences_only], reference="cardioner")[0]["train_ratio"] is None


def test_aggregate_mode_prints_the_table_without_training(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run("conll2003", 42, {"cardioner": (90.0, 10.0), "trainer": (89.0, 5.0)})))
    done = subprocess.run([sys.executable, str(SCRIPT), "--aggregate", str(path)], capture_output=True,
                          text=True, check=True)
    assert {row["system"] for row in json.loads(done.stdout)} == {"cardioner", "trainer"}
    assert "| conll2003 (5,432 sentences, 3 ep) | trainer | 1 | 89.00 |" in done.stderr
    assert "(0.50×)" in done.stderr


def test_ncbi_sentences_group_into_the_abstracts_that_spell_them(peers, tmp_path):
    abstracts = {"2": "Second one.", "1": "A  title .\nIts abstract, here."}  # grouped in file-name order
    sentences = ["Atitle.", "Itsabstract,here.", "Secondone."]
    assert peers.abstract_groups(sentences, abstracts) == [("1", 2), ("2", 1)]
    with pytest.raises(ValueError, match="abstract 2: the CoNLL sentences from 3 on do not spell it"):
        peers.abstract_groups(["Atitle.", "Itsabstract,here.", "Other."], abstracts)
    with pytest.raises(ValueError, match="1 CoNLL sentences after the last abstract"):
        peers.abstract_groups([*sentences, "Extra."], abstracts)


def test_merged_sentences_keep_tokens_spans_and_sentence_bounds(peers, tmp_path):
    path = tmp_path / "s.tsv"
    path.write_text("Familial\tB-Disease\npolyposis\tI-Disease\n.\tO\n\nAn\tO\nAPC\tB-Disease\ncase\tO\n",
                    encoding="utf-8")
    sentences, _ = read_corpus(path)
    doc = peers.merge_documents("train/1", sentences)
    assert doc.text == "Familial polyposis .\nAn APC case"
    assert [doc.text[s.start : s.end] for s in doc.spans] == ["Familial polyposis", "APC"]
    assert doc.meta["sentences"] == [[0, 3], [3, 6]]
    words = ["Familial", "polyposis", ".", "An", "APC", "case"]
    assert [doc.text[a:b] for a, b in doc.meta["tokens"]] == words
    records = peers.sentence_records([doc])
    assert [r["tags"] for r in records] == [["B-Disease", "I-Disease", "O"], ["O", "B-Disease", "O"]]


@pytest.mark.slow  # two processes import torch and transformers: ~20 CPU seconds
def test_the_driver_trains_predicts_and_scores_cardioner_on_sentences(tmp_path):
    # The whole path of one system: corpus files -> records -> a child process that trains cardioner (CRF,
    # sentence by sentence) on a tiny backbone and writes spans -> the driver's exact-match scores.
    data = tmp_path / "data" / "conll2003"
    data.mkdir(parents=True)
    for name in ("train.txt", "test.txt"):
        (data / name).write_text(CONLL, encoding="utf-8")
    backbone = tiny_backbone("bert", tmp_path / "backbones")
    output = tmp_path / "run.json"
    subprocess.run([sys.executable, str(SCRIPT), "--corpus", "conll2003", "--systems",
                    "cardioner-crf-sentences", "--model", str(backbone), "--data-dir", str(tmp_path / "data"),
                    "--epochs", "1", "--max-length", "32", "--work-dir", str(tmp_path / "runs"),
                    "--output", str(output)], capture_output=True, text=True, check=True, timeout=300)
    summary = json.loads(output.read_text())
    assert summary["train_sentences"] == summary["test_sentences"] == 4 and summary["test_spans"] == 5
    row = summary["systems"]["cardioner-crf-sentences"]
    assert row["status"] == "ok", row.get("error")
    assert 0.0 <= row["test_f1"] <= 100.0 and row["tp_fp_fn"][0] + row["tp_fp_fn"][2] == 5
    assert row["unknown_documents"] == 0 and row["train_sentences_per_cpu_second"] > 0
    assert row["versions"]["cardioner"].startswith(cardioner.__version__)
