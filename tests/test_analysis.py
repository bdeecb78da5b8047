"""``cardioner analyze``: span confusion by overlap (missed / spurious), error examples, and the plots on a
trained tiny export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ncbi_subset import base_config, write_subset
from typer.testing import CliRunner

from cardioner.analysis import confusion_matrix, error_examples, errors_markdown, sample_words
from cardioner.cli import app
from cardioner.config import load_config
from cardioner.data import read_corpus
from cardioner.data.document import Document, Span
from cardioner.training import ModelTrainer

TEXT = "Aspirin for chest pain in a patient with diabetes and heart failure."


def test_confusion_pairs_spans_by_overlap_across_types():
    gold = Document("d", TEXT, [Span(0, 7, "DRUG"), Span(12, 22, "SYMPTOM"), Span(41, 49, "DISEASE"),
                                Span(54, 67, "DISEASE")])
    predicted = Document("d", TEXT, [Span(0, 7, "DRUG"),  # exact
                                     Span(18, 22, "SYMPTOM"),  # same type, boundary off
                                     Span(41, 49, "SYMPTOM"),  # wrong type
                                     Span(28, 35, "DRUG")])  # spurious; "heart failure" is missed
    matrix = confusion_matrix([gold], [predicted], ["DISEASE", "DRUG", "SYMPTOM"])
    assert matrix["gold"] == ["DISEASE", "DRUG", "SYMPTOM", "spurious"]
    assert matrix["predicted"] == ["DISEASE", "DRUG", "SYMPTOM", "missed"]
    assert matrix["counts"] == [
        [0, 0, 1, 1],  # DISEASE: one predicted as SYMPTOM, one missed
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 1, 0, 0],  # a spurious DRUG
    ]
    assert matrix["exact_boundaries"] == 2

    errors = error_examples([gold], [predicted])
    assert errors["DISEASE"]["counts"] == {"missed": 1, "wrong_type": 1, "wrong_boundary": 0, "spurious": 0}
    assert errors["SYMPTOM"]["counts"]["wrong_boundary"] == 1
    assert errors["DRUG"]["correct"] == 1 and errors["DRUG"]["counts"]["spurious"] == 1
    wrong = errors["DISEASE"]["examples"]["wrong_type"][0]
    assert wrong["gold"]["text"] == "diabetes" and wrong["predicted"]["label"] == "SYMPTOM"
    assert "[[diabetes]]" in wrong["context"]
    markdown = errors_markdown(errors, "Errors")
    assert "| DISEASE | 0 | 1 | 1 | 0 | 0 |" in markdown and "### missed (1)" in markdown


def test_word_sample_keeps_entity_words_and_caps_the_total():
    types = ["O"] * 500 + ["A"] * 30 + ["B"] * 400
    chosen = sample_words(types, 200)
    picked = [types[i] for i in chosen]
    assert len(chosen) == 200 and picked.count("A") == 30 and picked.count("B") == 50
    assert chosen == sample_words(types, 200)  # seeded


@pytest.fixture(scope="module")
def export(shared_data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("analyze")
    paths = write_subset(shared_data, directory / "data")
    raw = base_config(paths, epochs=4, lr=3e-3)
    flat = {f"{section}.{key}": value for section, values in raw.items() for key, value in values.items()}
    trainer = ModelTrainer(load_config(None, flat))
    train, _ = read_corpus(paths["train"])
    dev, _ = read_corpus(paths["dev"])
    trainer.train(train, dev)
    trainer.save(directory / "model")
    return directory / "model", paths["dev"]


def test_analyze_command_writes_the_plots_and_tables(export, tmp_path):
    model_dir, data = export
    output = tmp_path / "analysis"
    result = CliRunner().invoke(app, ["analyze", "--model", str(model_dir), "--data", str(data),
                                      "--output", str(output), "--max-words", "300"])
    assert result.exit_code == 0, result.output
    names = {"confusion_matrix.json", "confusion_matrix.png", "errors.json", "errors.md", "words_pca.png",
             "words_tsne.png"}
    assert names <= {p.name for p in output.iterdir()}
    for name in names:
        assert str(output / name) in result.output
        assert (output / name).stat().st_size > (10_000 if name.endswith(".png") else 10)
    matrix = json.loads((output / "confusion_matrix.json").read_text())
    assert matrix["gold"] == ["Disease", "spurious"] and matrix["predicted"] == ["Disease", "missed"]
    gold_spans = sum(len(d.spans) for d in read_corpus(data)[0])
    assert sum(matrix["counts"][0]) == gold_spans  # every gold span is in its row once
    errors = json.loads((output / "errors.json").read_text())
    assert set(errors) <= {"Disease"}


def test_analyze_rejects_a_corpus_without_spans(export, tmp_path):
    model_dir, _ = export
    empty = tmp_path / "plain.conll"
    empty.write_text("No\tO\nspans\tO\nhere\tO\n\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["analyze", "--model", str(model_dir), "--data", str(empty)])
    assert result.exit_code == 1
    assert "no annotated spans" in result.output


def test_nested_spans_pair_exact_then_same_type_then_across_types():
    """An exactly right DRUG nested in a gold PROC is correct (as score_spans counts it), not "missed"; a DRUG
    overlapping the nested gold DRUG less than the PROC still pairs with the DRUG."""
    from cardioner.evaluation import score_spans

    text = "Se inició administración de aspirina oral."
    gold = Document("d", text, [Span(10, 36, "PROC"), Span(28, 36, "DRUG")])
    exact = Document("d", text, [Span(28, 36, "DRUG")])
    matrix = confusion_matrix([gold], [exact], ["DRUG", "PROC"])
    assert matrix["counts"] == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]  # DRUG right, PROC missed
    errors = error_examples([gold], [exact])
    assert errors["DRUG"]["correct"] == 1 and errors["DRUG"]["counts"]["missed"] == 0
    assert errors["PROC"]["counts"] == {"missed": 1, "wrong_type": 0, "wrong_boundary": 0, "spurious": 0}
    assert score_spans([gold], [exact], match="exact")["micro"]["tp"] == 1

    # boundary off: shares 10 characters with PROC, 8 with the gold DRUG; same type wins
    wider = Document("d", text, [Span(26, 36, "DRUG")])
    errors = error_examples([gold], [wider])
    assert errors["DRUG"]["counts"]["wrong_boundary"] == 1 and errors["PROC"]["counts"]["missed"] == 1
    assert errors["PROC"]["counts"]["wrong_type"] == 0
    # no same-type partner: the overlap across types is still a wrong type
    other = Document("d", text, [Span(10, 24, "DISEASE")])
    assert confusion_matrix([gold], [other], ["DRUG", "PROC"])["counts"][1] == [0, 0, 1, 0]  # PROC -> DISEASE


def test_analyze_writes_beside_the_export_by_default(export, tmp_path):
    """Issue 21 (the kept analysis): MODEL.analysis beside the export, never MODEL/analysis, which the next
    export to that folder replaced silently."""
    from cardioner.analysis import default_output

    model_dir, data = export
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    result = CliRunner().invoke(app, ["analyze", "--model", str(model), "--data", str(data), "--max-words",
                                      "100"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.analysis" / "errors.md").is_file() and not (model / "analysis").exists()
    assert default_output(Path("runs") / "model") == Path("runs").absolute() / "model.analysis"


def test_errors_md_says_when_its_examples_are_cut():
    """Issue 21: "missed (30)" over 20 listed examples says that only the first 20 are shown."""
    example = {"document": "d", "gold": {"label": "Disease", "text": "x"}, "predicted": None, "context": "x"}
    errors = {"Disease": {"correct": 1, "counts": {"missed": 30, "wrong_type": 0, "wrong_boundary": 2,
                                                   "spurious": 0},
                          "examples": {"missed": [example] * 20, "wrong_type": [],
                                       "wrong_boundary": [example] * 2, "spurious": []}}}
    page = errors_markdown(errors, "t")
    assert "### missed (30; the first 20 shown)" in page and "### wrong boundary (2)" in page
