"""Span confidences (``Span.score``) in documents and in every output format: JSONL ``"score"``, the TSV
``score`` column, brat AnnotatorNotes on request; and that equality, hashing and ordering ignore them."""

from __future__ import annotations

import json

import pytest

from cardioner.data.brat import format_ann, read_brat, write_brat
from cardioner.data.document import CorpusError, Document, Span
from cardioner.data.jsonl import read_jsonl, write_jsonl
from cardioner.data.tsv import read_tsv, write_tsv

TEXT = "Aspirin for chest pain and fever."


def scored_document() -> Document:
    return Document("doc1", TEXT, [Span(0, 7, "DRUG", score=0.973125), Span(12, 22, "DIS", score=0.5),
                                   Span(27, 32, "DIS", score=None)])


def test_score_is_ignored_by_equality_hashing_and_ordering():
    assert Span(0, 7, "DRUG", score=0.9) == Span(0, 7, "DRUG")
    assert hash(Span(0, 7, "DRUG", score=0.9)) == hash(Span(0, 7, "DRUG", score=0.1))
    assert {Span(0, 7, "DRUG", score=0.9)} == {Span(0, 7, "DRUG")}
    assert sorted([Span(5, 9, "A", score=0.1), Span(0, 7, "B", score=0.9)])[0].start == 0
    assert Span(0, 7, "DRUG").score is None


def test_jsonl_writes_scores_rounded_and_reads_them_back(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl([scored_document()], path)
    record = json.loads(path.read_text(encoding="utf-8"))
    assert [span.get("score") for span in record["spans"]] == [0.9731, 0.5, None]
    (doc,) = read_jsonl(path)
    assert [span.score for span in doc.spans] == [0.9731, 0.5, None]


@pytest.mark.parametrize("bad", ['"high"', "1.5", "-0.1", "true"])
def test_jsonl_refuses_a_score_that_is_not_a_probability(tmp_path, bad):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "Aspirin", "spans": [{"start": 0, "end": 7, "label": "DRUG", '
                    f'"score": {bad}}}]}}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:1: .*score"):
        read_jsonl(path)


def test_tsv_has_a_score_column_only_when_spans_carry_scores_and_reads_it_back(tmp_path):
    path = tmp_path / "out.tsv"
    write_tsv([scored_document()], path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["filename", "label", "start_span", "end_span", "text", "score"]
    assert lines[1].split("\t") == ["doc1", "DRUG", "0", "7", "Aspirin", "0.9731"]
    assert lines[3].split("\t") == ["doc1", "DIS", "27", "32", "fever", ""]
    docs = read_tsv(path)
    assert [span.score for span in docs[0].spans] == [0.9731, 0.5, None]
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "doc1.txt").write_text(TEXT, encoding="utf-8")
    assert [span.score for span in read_tsv(path, texts_dir=texts)[0].spans] == [0.9731, 0.5, None]
    plain = tmp_path / "plain.tsv"
    write_tsv([Document("doc1", TEXT, [Span(0, 7, "DRUG")])], plain)
    assert plain.read_text(encoding="utf-8").splitlines()[0].split("\t")[-1] == "text"


def test_tsv_refuses_a_score_cell_that_is_not_a_probability(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("filename\tlabel\tstart_span\tend_span\ttext\tscore\ndoc1\tDRUG\t0\t7\tAspirin\t2\n",
                    encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.tsv:2: .*\[0, 1\]"):
        read_tsv(path)


def test_brat_writes_scores_as_annotator_notes_only_on_request(tmp_path):
    doc = scored_document()
    assert "AnnotatorNotes" not in format_ann(doc)
    lines = format_ann(doc, score_notes=True).splitlines()
    assert lines == ["T1\tDRUG 0 7\tAspirin", "#1\tAnnotatorNotes T1\tconfidence 0.9731",
                     "T2\tDIS 12 22\tchest pain", "#2\tAnnotatorNotes T2\tconfidence 0.5000",
                     "T3\tDIS 27 32\tfever"]
    write_brat([doc], tmp_path / "brat", score_notes=True)
    (read,) = read_brat(tmp_path / "brat")
    assert read.spans == doc.spans  # the notes are kept aside as notes, the entities read as they were
    assert len(read.meta["brat_other"]) == 2


def test_brat_score_notes_number_after_existing_notes():
    doc = scored_document()
    doc.meta.update(brat_ids=["T1", "T2", "T3"], brat_other=[[1, "#3\tAnnotatorNotes T1\ta human note"]])
    lines = format_ann(doc, score_notes=True).splitlines()
    assert "#4\tAnnotatorNotes T1\tconfidence 0.9731" in lines
    assert "#3\tAnnotatorNotes T1\ta human note" in lines
