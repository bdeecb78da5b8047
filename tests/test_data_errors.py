"""One test per bad-input case: a CorpusError that names the file, the line (or record) and the problem."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import Dataset

from cardioner.data import (
    CorpusError,
    Document,
    ReadReport,
    Span,
    read_brat,
    read_conll,
    read_corpus,
    read_jsonl,
    read_tsv,
    write_brat,
    write_conll,
    write_corpus,
)
from cardioner.data.conll import REPAIR_NOTE


def brat(tmp_path: Path, text: str, ann: str | None, name: str = "doc") -> Path:
    """A brat folder with one NAME.txt (+ NAME.ann)."""
    folder = tmp_path / "brat"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8", newline="")
    if ann is not None:
        (folder / f"{name}.ann").write_text(ann, encoding="utf-8", newline="")
    return folder


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def test_offsets_past_end_of_text(tmp_path: Path) -> None:
    folder = brat(tmp_path, "short", "T1\tX 0 5\tshort\nT2\tX 2 40\tort\n")
    with pytest.raises(
        CorpusError, match=r"doc\.ann:2: .*2-40 \(X\) ends past the end of the text \(5 characters\)"
    ):
        read_brat(folder)


def test_annotated_string_differs_from_slice_says_both(tmp_path: Path) -> None:
    folder = brat(tmp_path, "chest pain", "T1\tSYM 6 10\tpane\n")
    with pytest.raises(CorpusError, match=r"doc\.ann:1: annotated string 'pane' != text\[6 10\] 'pain'"):
        read_brat(folder)


@pytest.mark.parametrize("offsets, problem", [("-1 4", "negative offset"), ("6 2", "reversed span 6-2")])
def test_negative_or_reversed_offsets(tmp_path: Path, offsets: str, problem: str) -> None:
    folder = brat(tmp_path, "chest pain", f"T1\tSYM {offsets}\tx\n")
    with pytest.raises(CorpusError, match=rf"doc\.ann:1: .*{problem}"):
        read_brat(folder)


def test_negative_offset_in_jsonl(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a", "text": "abc"}\n{"id": "b", "text": "abc", "spans": '
                                      '[{"start": 2, "end": 1, "label": "X"}]}\n')
    with pytest.raises(CorpusError, match=r"a\.jsonl:2: .*reversed span 2-1"):
        read_jsonl(path)


def test_ann_without_txt(tmp_path: Path) -> None:
    folder = brat(tmp_path, "x", "")
    write(folder, "orphan.ann", "T1\tX 0 1\tx\n")
    with pytest.raises(CorpusError, match=r"orphan\.ann: \.ann file without its \.txt"):
        read_brat(folder)


def test_a_repeated_entity_id_names_both_lines(tmp_path: Path) -> None:
    folder = brat(tmp_path, "fiebre alta", "T1\tS 0 6\tfiebre\nT2\tS 7 11\talta\nT1\tA 7 11\talta\n")
    with pytest.raises(CorpusError, match=r"doc\.ann:3: entity id T1 is given twice \(lines 1 and 3\)"):
        read_brat(folder)  # was read as two spans with one id: a note or relation on T1 meant either


@pytest.mark.parametrize("line", ["T1\tSYM 0 five\tchest", "T1\tSYM 0 5", "Q1\twhat is this"])
def test_unparseable_t_line(tmp_path: Path, line: str) -> None:
    folder = brat(tmp_path, "chest pain", f"T1\tSYM 0 5\tchest\n{line}\n")
    with pytest.raises(CorpusError, match=r"doc\.ann:2: unparseable"):
        read_brat(folder)


def test_malformed_id_is_repaired_and_counted(tmp_path: Path) -> None:
    report = ReadReport()
    docs = read_brat(brat(tmp_path, "chest pain", "sT1\tSYM 0 5\tchest\n"), report)
    assert len(docs[0].spans) == 1 and report.repaired["malformed T ids read as T<n>"] == 1


def test_unknown_tag_prefix(tmp_path: Path) -> None:
    path = write(tmp_path, "a.conll", "John\tB-PER\nlives\tO\nin\tX-LOC\n")
    with pytest.raises(CorpusError, match=r"a\.conll:3: unknown tag 'X-LOC'"):
        read_conll(path)


def test_i_continuing_another_type_is_repaired_and_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "a.conll", "New\tB-LOC\nYork\tI-ORG\nTimes\tI-ORG\nsaid\tO\nso\tB-PER\n")
    report = ReadReport()
    doc = read_conll(path, report)[0]
    assert [(doc.text[s.start : s.end], s.label) for s in doc.spans] == [
        ("New", "LOC"),
        ("York Times", "ORG"),
        ("so", "PER"),
    ]
    assert report.repaired[REPAIR_NOTE] == 1 and REPAIR_NOTE in report.summary()


def test_inconsistent_column_count(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-MISC\n")
    with pytest.raises(
        CorpusError, match=r"a\.txt:3: inconsistent column count: 3 columns .* but 4 on line 1"
    ):
        read_conll(path)


@pytest.mark.parametrize("name, content", [("a.conll", ""), ("a.jsonl", "\n\n"), ("a.tsv", "")])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(
        CorpusError, match=r"a\.(conll|jsonl|tsv): (empty file|file contains only whitespace)"
    ):
        read_corpus(path, format=name.split(".")[1])


def test_invalid_utf8_shows_byte_offset(tmp_path: Path) -> None:
    folder = brat(tmp_path, "x", "")
    (folder / "doc.txt").write_bytes(b"ok\nbad \xff byte")
    with pytest.raises(CorpusError, match=r"doc\.txt:2: invalid UTF-8 at byte offset 7 \(bytes b'\\xff'"):
        read_brat(folder)


@pytest.mark.parametrize("record", ['["not", "an", "object"]', '"text"', "42"])
def test_jsonl_record_not_an_object(tmp_path: Path, record: str) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a", "text": "ok"}\n' + record + "\n")
    with pytest.raises(CorpusError, match=r"a\.jsonl:2: record must be a JSON object"):
        read_jsonl(path)


@pytest.mark.parametrize("field", ["id", "text"])
def test_jsonl_lone_surrogate_escape_names_the_line(tmp_path: Path, field: str) -> None:
    """JSON can spell half a UTF-16 pair (the slow hypothesis run found it: writing the id back crashed)."""
    record = {"id": "a", "text": "ok"} | {field: "\\ud81e9990"}
    path = write(tmp_path, "a.jsonl", '{"id": "b", "text": "\\ud83d\\ude00 a pair is fine"}\n'
                 + json.dumps(record).replace("\\\\", "\\") + "\n")
    with pytest.raises(CorpusError, match=r"a\.jsonl:2: not valid data: \\ud81e is half of a UTF-16 "):
        read_jsonl(path)


def test_jsonl_without_text(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a", "spans": []}\n')
    with pytest.raises(CorpusError, match=r"a\.jsonl:1: record lacks 'text' \(keys: \['id', 'spans'\]\)"):
        read_jsonl(path)


def test_jsonl_span_text_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a", "text": "chest pain", "spans": '
                                      '[{"start": 0, "end": 5, "label": "X", "text": "chess"}]}\n')
    with pytest.raises(CorpusError, match=r"a\.jsonl:1: .*'chess' != text\[0:5\] 'chest'"):
        read_jsonl(path)


def test_duplicate_document_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.jsonl", '{"id": "x", "text": "a"}\n{"id": "y", "text": "b"}\n{"id": "x", "text": "c"}\n'
    )
    with pytest.raises(CorpusError, match=r"a\.jsonl: duplicate document id 'x' \(documents 1 and 3"):
        read_corpus(path)


def test_overlapping_spans_in_flat_task_show_both(tmp_path: Path) -> None:
    folder = brat(
        tmp_path, "presión arterial alta", "T1\tPROC 0 16\tpresión arterial\nT2\tANAT 8 16\tarterial\n"
    )
    docs, _ = read_corpus(folder)  # fine for a multi-label task
    assert len(docs[0].spans) == 2
    with pytest.raises(CorpusError, match=r"doc\.ann:2: .*overlapping spans 0-16 PROC 'presión arterial' and "
                                          r"8-16 ANAT 'arterial' \(lines 1 and 2\)"):
        read_corpus(folder, flat=True)


def test_nothing_dropped_silently_report(tmp_path: Path) -> None:
    folder = brat(tmp_path, "a b", "T1\tX 0 1\ta\n\nA1\tNeg T1\n")
    brat(tmp_path, "no ann", None, name="other")
    _, report = read_corpus(folder)
    summary = report.summary()
    assert "read 2 documents, 1 span" in summary and "1 spans" not in summary
    assert "1 blank lines in .ann files" in summary and "1 brat A lines (attribute)" in summary
    assert "1 .txt files without .ann" in summary


# --- bad input found in review: each names the file and line (or document) and what is wrong ----------------


@pytest.mark.parametrize("tag, line, bad", [
    ("B-creative-work,B-person", 2, "','"),  # WNUT-17 extras: several comma-joined labels in one tag
    ("B-Signo clinico", 2, "' '"),
    ("B-B-PER", 2, "'B-'"),
])
def test_tag_with_several_labels_or_whitespace_is_rejected(
    tmp_path: Path, tag: str, line: int, bad: str
) -> None:
    path = write(tmp_path, "a.conll", f"Ana\tB-PER\nGotham\t{tag}\n")
    with pytest.raises(
        CorpusError, match=rf"a\.conll:{line}: tag '{re.escape(tag)}': its entity type .* holds {bad}"
    ):
        read_conll(path)


def test_wnut17_multilabel_extras_file_is_rejected_at_its_first_joined_tag(shared_data: Path) -> None:
    with pytest.raises(
        CorpusError, match=r"emerging\.test\.conll:212: tag 'B-corporation,B-person,B-location'"
    ):
        read_corpus(shared_data / "wnut17" / "extras" / "emerging.test.conll")


def test_jsonl_ner_tags_with_joined_labels_name_the_record(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", '{"text": "ok"}\n{"tokens": ["Gotham"], "ner_tags": ["B-LOC,B-ORG"]}\n')
    with pytest.raises(CorpusError, match=r"a\.jsonl:2: tag 'B-LOC,B-ORG'"):
        read_jsonl(path)


@pytest.mark.parametrize("key, value", [("label", [[0, 3, "PER"]]), ("entities", [{"start": 0, "end": 3}]),
                                        ("ents", [[0, 3, "PER"]])])
def test_jsonl_annotation_form_not_read_is_an_error(tmp_path: Path, key: str, value: list) -> None:
    path = write(tmp_path, "a.jsonl", '{"id": "a", "text": "Ana"}\n'
                                      + json.dumps({"id": "b", "text": "Ana", key: value}) + "\n")
    with pytest.raises(
        CorpusError,
        match=rf"a\.jsonl:2: record has '{key}', an annotation form cardioner does not "
        r"read; expected 'spans'",
    ):
        read_jsonl(path)


def test_jsonl_document_class_or_empty_annotation_list_is_not_an_error(tmp_path: Path) -> None:
    """Nothing is lost: a scalar "label" classifies the document, an empty "entities" holds no span."""
    path = write(
        tmp_path,
        "a.jsonl",
        json.dumps(
            {
                "id": "a",
                "text": "Ana",
                "label": "discharge",
                "entities": [],
                "spans": [{"start": 0, "end": 3, "label": "PER"}],
            }
        )
        + "\n",
    )
    docs = read_jsonl(path)
    assert [(s.start, s.end, s.label) for s in docs[0].spans] == [(0, 3, "PER")]


def test_jsonl_tokens_not_in_text_name_the_token_and_record(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", '{"text": "John Smith ran", "tokens": ["John", "Smyth", "ran"], '
                                      '"ner_tags": ["B-PER", "I-PER", "O"]}\n')
    with pytest.raises(
        CorpusError,
        match=r"a\.jsonl:1: token 2 'Smyth' does not come next in 'text' \(at offset 4, "
        r"after whitespace only; the text there is ' Smith ran'\)",
    ):
        read_jsonl(path)


def test_jsonl_spans_and_ner_tags_together_are_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.jsonl", '{"text": "Ana", "spans": [], "tokens": ["Ana"], "ner_tags": ["B-PER"]}\n'
    )
    with pytest.raises(CorpusError, match=r"a\.jsonl:1: record has both 'spans' and 'tokens' \+ 'ner_tags'"):
        read_jsonl(path)


def test_overlapping_fragments_are_rejected(tmp_path: Path) -> None:
    folder = brat(tmp_path, "dolor en el pecho", "T1\tSYM 0 5\tdolor\nT2\tSYM 0 8;3 11\tdolor en or en el\n")
    with pytest.raises(
        CorpusError, match=r"doc\.ann:2: document 'doc': fragments 0-8 and 3-11 of a SYM span overlap"
    ):
        read_brat(folder)
    path = write(
        tmp_path,
        "a.jsonl",
        '{"text": "dolor en el pecho", "spans": [{"start": 0, "end": 11, "label": "S", '
        '"fragments": [[6, 11], [0, 8]]}]}\n',
    )
    with pytest.raises(
        CorpusError, match=r"a\.jsonl:1: document 'a#1': fragments 0-8 and 6-11 of a S span overlap"
    ):
        read_jsonl(path)


def test_writing_duplicate_ids_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    docs = [Document("a", "fiebre alta", [Span(0, 6, "S")]), Document("a", "tos seca", [Span(0, 3, "S")])]
    for to in ("brat", "jsonl", "tsv"):
        with pytest.raises(
            CorpusError,
            match=r"duplicate document id 'a' \(documents 1 and 2 in the documents to " "write\\)",
        ):
            write_corpus(docs, tmp_path / f"out.{to}", to)
    with pytest.raises(CorpusError, match=r"brat: duplicate document id 'a'"):
        write_brat(docs, tmp_path / "brat")
    assert not list(tmp_path.iterdir())


def test_predict_inputs_with_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    from cardioner.inference import read_inputs

    path = write(
        tmp_path, "in.jsonl", '{"id": "note", "text": "fiebre alta"}\n{"id": "note", "text": "tos seca"}\n'
    )
    with pytest.raises(CorpusError, match=r"in\.jsonl: duplicate document id 'note' \(documents 1 and 2"):
        read_inputs(path)


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_predict_inputs_from_a_jsonl_file_without_records_are_an_error(tmp_path: Path, content: str) -> None:
    from cardioner.inference import read_inputs

    path = write(tmp_path, "in.jsonl", content)  # predict wrote an empty output and said nothing of it
    with pytest.raises(CorpusError, match=r"in\.jsonl: (empty file|no records: only blank lines)"):
        read_inputs(path)


@pytest.mark.parametrize("token", ["\n", "a\tb", " "])
def test_conll_writer_rejects_tokens_a_line_cannot_hold(tmp_path: Path, token: str) -> None:
    doc = Document("s1", f"Fiebre {token} Tos", [Span(0, 6, "S")],
                   {"tokens": [[0, 6], [7, 7 + len(token)], [8 + len(token), 11 + len(token)]]})
    with pytest.raises(
        CorpusError,
        match=rf"o\.conll: document 's1': token 2 {re.escape(repr(token))} "
        rf"\(characters 7-{7 + len(token)}\) (is blank|holds the line break|holds the column separator)",
    ):
        write_conll([doc], tmp_path / "o.conll")
    assert not (tmp_path / "o.conll").exists()


@pytest.mark.parametrize("to, label, bad", [("brat", "Signo clinico", " "), ("tsv", "S\tX", "\t"),
                                            ("conll", "Signo clinico", " "), ("conll", "A,B", ",")])
def test_writers_reject_labels_they_cannot_hold(tmp_path: Path, to: str, label: str, bad: str) -> None:
    doc = Document("a", "fiebre alta", [Span(0, 6, label)])
    with pytest.raises(CorpusError, match=rf"document 'a': label {re.escape(repr(label))} \(span 0-6\) holds "
                                          rf"{re.escape(repr(bad))} at character"):
        write_corpus([doc], tmp_path / "out", to)
    assert not (tmp_path / "out").exists()


def test_flat_overlap_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    write(tmp_path / "corpus", "part1.jsonl", '{"id": "a", "text": "fiebre alta", "spans": []}\n')
    write(
        tmp_path / "corpus",
        "part2.jsonl",
        '{"id": "b", "text": "x"}\n\n{"id": "c", "text": "dolor de pecho", '
        '"spans": [{"start": 0, "end": 14, "label": "S"}, '
        '{"start": 9, "end": 14, "label": "A"}]}\n',
    )
    with pytest.raises(CorpusError, match=r"corpus/part2\.jsonl:3: document 'c': overlapping spans 0-14 S"):
        read_corpus(tmp_path / "corpus", flat=True)
    tsv = write(tmp_path, "a.tsv", "filename\tlabel\tstart_span\tend_span\ttext\nd\tS\t0\t5\tdolor\n"
                                   "e\tS\t0\t3\tdol\nd\tA\t3\t8\tor de\n")
    with pytest.raises(
        CorpusError, match=r"a\.tsv:4: document 'd': overlapping spans 0-5 S .* \(lines 2 and 4\)"
    ):
        read_corpus(tsv, flat=True)
    rows = Dataset.from_list([{"text": "ab", "spans": []},
                              {"text": "dolor", "spans": [{"start": 0, "end": 5, "label": "S"},
                                                          {"start": 1, "end": 3, "label": "A"}]}])
    with pytest.raises(CorpusError, match=r"dataset split data:2: document 'data#2': overlapping spans"):
        read_corpus(rows, flat=True)


def test_tsv_missing_text_file_names_the_tsv_row(tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    write(tmp_path / "texts", "a.txt", "fiebre")
    path = write(
        tmp_path,
        "g.tsv",
        "filename\tlabel\tstart_span\tend_span\ttext\na\tS\t0\t6\tfiebre\nb\tS\t0\t3\ttos\n",
    )
    with pytest.raises(CorpusError, match=r"g\.tsv:3: no text .*texts/b\.txt for filename 'b'"):
        read_tsv(path, texts_dir=tmp_path / "texts")


# ------------------------------------------------------------------ issue 15: hostile and messy input
def test_jsonl_meta_brat_other_is_never_written_verbatim_into_an_ann(tmp_path: Path) -> None:
    """One record, one span: an injected entity in meta.brat_other
    (a T line, a line break) never reaches the .ann."""
    record = {
        "id": "a",
        "text": "fiebre alta",
        "spans": [{"start": 0, "end": 6, "label": "S"}],
        "meta": {
            "brat_ids": ["T1"],
            "brat_other": [
                [1, "T2\tX 7 11\talta"],
                [1, "#1\tAnnotatorNotes T1\tok\nT3\tX 0 6\tfiebre"],
                [1, "#2\tAnnotatorNotes T1\tkept"],
                "junk",
            ],
        },
    }
    path = write(tmp_path, "in.jsonl", json.dumps(record) + "\n")
    docs, report = read_corpus(path)
    assert (
        report.skipped[
            "kept-aside brat lines or brat ids in a record's meta that could not be written as they "
            "are (dropped)"
        ]
        == 3
    )
    write_corpus(docs, tmp_path / "out", "brat")
    assert (tmp_path / "out" / "a.ann").read_text() == "T1\tS 0 6\tfiebre\n#2\tAnnotatorNotes T1\tkept\n"
    assert len(read_brat(tmp_path / "out")[0].spans) == 1


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({"tokens": 5}, "meta.tokens must be a list of"),
        ({"tokens": [[0, 6], [3, 99]]}, "meta.tokens must be"),
        ({"tokens": [[0, 6]], "sentences": [[0, 2]]}, "meta.sentences must be"),
        ({"separator": "|"}, "meta.separator"),
        ({"tokens": [[0, 6]], "columns": [["a\tb"]]}, "meta.columns must be"),
        ({"docstart": "yes"}, "meta.docstart"),
        ({"brat_other": 5}, None),
        ("notes", "'meta' must be an object"),
        ({"span_texts": [1]}, "meta.span_texts"),
    ],
)
def test_malformed_jsonl_meta_is_a_corpus_error_with_file_and_line(tmp_path: Path, meta, problem) -> None:
    record = {"id": "a", "text": "fiebre alta", "spans": [{"start": 0, "end": 6, "label": "S"}], "meta": meta}
    path = write(tmp_path, "in.jsonl", '{"id": "z", "text": "x"}\n' + json.dumps(record) + "\n")
    if problem is None:  # a kept-aside list that is no list: dropped and counted, never written
        docs, report = read_corpus(path)
        assert docs[1].meta["brat_other"] == [] and sum(report.skipped.values()) == 1
        return
    with pytest.raises(CorpusError, match=rf"in\.jsonl:2: {problem}"):
        read_corpus(path)


@pytest.mark.parametrize(
    ("span", "problem"),
    [
        (
            {"fragments": [[0.9, 5.7]], "label": "S"},
            r"'start' must be an integer, got 0.9 \(a fraction is never rounded\)",
        ),
        ({"start": "0", "end": 6, "label": "S"}, "'start' must be an integer, not text"),
        ({"start": 0.0, "end": 6, "label": "S"}, "'start' must be an integer, got 0.0"),
        ({"start": True, "end": 6, "label": "S"}, "'start' must be an integer, got the boolean True"),
        (
            {"start": 15, "end": 20, "label": "S", "fragments": [[0, 5]]},
            "'start' 15 contradicts its fragments",
        ),
        ({"start": 0, "end": 0, "label": "S"}, r"empty span 0-0 \(S\) covers no character"),
        ({"start": 0, "end": int("9" * 30), "label": "S"}, "must lie within"),
    ],
)
def test_jsonl_offsets_are_integers_never_coerced(tmp_path: Path, span: dict, problem: str) -> None:
    path = write(
        tmp_path, "in.jsonl", json.dumps({"id": "a", "text": "chest pain and fever", "spans": [span]}) + "\n"
    )
    with pytest.raises(CorpusError, match=rf"in\.jsonl:1: .*{problem}"):
        read_jsonl(path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            '{"id": "a", "text": "abc", "spans": [{"start": 0, "end": ' + "9" * 5000 + ', "label": "X"}]}',
            "not valid data: a 5000-digit integer",
        ),
        (
            '{"id": "a", "text": "abc", "spans": [{"fragments": [[0, Infinity]], "label": "X"}]}',
            "not valid data: Infinity is not a JSON number",
        ),
        (
            '{"id": "a", "text": "abc", "spans": [{"start": 0, "end": NaN, "label": "X"}]}',
            "NaN is not a JSON number",
        ),
        (
            '{"id": "a", "text": "abc", "spans": [{"start": 0, "end": 1e999, "label": "X"}]}',
            "must be a finite number",
        ),
        ("[" * 100000, "not valid"),
        ('{"tokens": ["a", "b"], "ner_tags": ["O", "X-FOO"]}', "unknown tag 'X-FOO'"),
        ('{"tokens": ["a", "b"], "ner_tags": ["O", 7]}', "ner_tags holds integer 7"),
        ('{"tokens": ["a", "\\u00a0"], "ner_tags": ["O", "O"]}', "token 2 '\\\\xa0' is blank"),
        ('{"id": ["x"], "text": "abc"}', "'id' must be a non-empty string"),
    ],
)
def test_jsonl_hostile_records_name_the_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path, "in.jsonl", '{"id": "z", "text": "x"}\n' + line + "\n")
    with pytest.raises(CorpusError, match=rf"in\.jsonl:2: .*{problem}"):
        read_jsonl(path)


def test_brat_and_tsv_offsets_of_thousands_of_digits_are_errors_with_the_line(tmp_path: Path) -> None:
    folder = brat(tmp_path, "chest pain", "T1\tSYM 0 5\tchest\nT2\tSYM 0 " + "9" * 5000 + "\tx\n")
    with pytest.raises(CorpusError, match=r"doc\.ann:2: unparseable T line: an offset must be an integer"):
        read_brat(folder)
    tsv = write(
        tmp_path, "a.tsv", "filename\tlabel\tstart_span\tend_span\ttext\ndoc\tX\t0\t" + "9" * 5000 + "\tx\n"
    )
    with pytest.raises(CorpusError, match=r"a\.tsv:2: start_span/end_span must be integers"):
        read_tsv(tsv)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("doc\t\t0\t5\tchest", "label '' is empty"),
        ("\tX\t0\t5\tchest", "filename '' is empty"),
        ("doc\tX\rY\t0\t5\tchest", r"label 'X\\rY' is empty or holds a line break"),
        ("d\roc\tX\t0\t5\tchest", r"filename 'd\\roc' holds '\\r'"),
        ("doc\tX\t1_0\t15\tx", "'1_0' is not written with ASCII digits"),
        ("doc\tX\t+3\t5\tx", "'\\+3' is not written"),
        ("doc\tX\t\u0660\t5\tchest", "is not written with ASCII digits"),
        ("doc\tX\t 0\t5\tchest", "is not written"),
        ("doc\tX\t3\t3\t", r"empty span 3-3 \(X\)"),
    ],
)
def test_tsv_is_strict_where_leniency_would_change_data(tmp_path: Path, row: str, problem: str) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "doc.txt").write_text("chest pain", encoding="utf-8")
    path = write(tmp_path, "a.tsv", "filename\tlabel\tstart_span\tend_span\ttext\n" + row + "\n")
    with pytest.raises(CorpusError, match=rf"a\.tsv:2: .*{problem}"):
        read_tsv(path, texts_dir=tmp_path / "texts")


def test_tsv_filenames_name_files_inside_texts_dir_only(tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "secret.txt").write_text("chest pain", encoding="utf-8")
    path = write(
        tmp_path, "a.tsv", "filename\tlabel\tstart_span\tend_span\ttext\n../secret\tX\t0\t5\tchest\n"
    )
    with pytest.raises(CorpusError, match=r"a\.tsv:2: filename '../secret' is not a plain relative path"):
        read_tsv(path, texts_dir=tmp_path / "texts")
    (tmp_path / "texts" / "link.txt").symlink_to(tmp_path / "secret.txt")
    write(tmp_path, "a.tsv", "filename\tlabel\tstart_span\tend_span\ttext\nlink\tX\t0\t5\tchest\n")
    with pytest.raises(CorpusError, match=r"link\.txt: is a symbolic link"):
        read_tsv(path, texts_dir=tmp_path / "texts")


@pytest.mark.parametrize(("line", "problem"), [
    ("fie\rbre\tB-S", r"token 'fie\\rbre' holds the line break '\\r'"),
    ("\u00a0\tB-S", r"token '\\xa0' is blank"), (" \tB-S", "token ' ' is blank"),
    ("fie\u2028bre\tO", r"token 'fie\\u2028bre' holds the line break '\\u2028'"),
])
def test_conll_tokens_that_are_blank_or_hold_a_line_break_are_errors(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = write(tmp_path, "a.conll", "Aspirin\tB-DRUG\n" + line + "\n")
    with pytest.raises(CorpusError, match=rf"a\.conll:2: {problem}"):
        read_conll(path)


@pytest.mark.parametrize("offsets", ["3 3", "0 5;7 7"])
def test_zero_length_brat_spans_are_errors(tmp_path: Path, offsets: str) -> None:
    folder = brat(tmp_path, "chest pain", f"T1\tSYM {offsets}\t\n")
    with pytest.raises(CorpusError, match=r"doc\.ann:1: .*empty span (7-7|3-3) \(SYM\) covers no character"):
        read_brat(folder)


def test_brat_offsets_are_ascii_digits(tmp_path: Path) -> None:
    folder = brat(tmp_path, "chest pain", "T1\tSYM \u0660 5\tchest\n")
    with pytest.raises(
        CorpusError, match="doc\\.ann:1: unparseable T line: offsets '\u0660 5' are not 'START END"
    ):
        read_brat(folder)


def saved_dataset(tmp_path: Path) -> Path:
    from datasets import DatasetDict

    folder = tmp_path / "hf"
    DatasetDict(
        {"train": Dataset.from_dict({"tokens": [["a", "b"]], "ner_tags": [["O", "B-X"]]})}
    ).save_to_disk(folder)
    return folder


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (
            lambda f: (f / "dataset_dict.json").write_text('{"splits": null}'),
            r"dataset_dict\.json: 'splits' must be",
        ),
        (
            lambda f: (f / "dataset_dict.json").write_text('{"splits": ['),
            r"dataset_dict\.json:1: not valid JSON",
        ),
        (
            lambda f: (f / "train" / "state.json").write_text(
                json.dumps({**json.loads((f / "train" / "state.json").read_text()), "_data_files": []})
            ),
            r"state\.json: '_data_files' must list",
        ),
        (
            lambda f: (f / "train" / "dataset_info.json").write_text(
                json.dumps(
                    {
                        **json.loads((f / "train" / "dataset_info.json").read_text()),
                        "features": {"tokens": {"_type": "Nope"}},
                    }
                )
            ),
            "not a readable dataset folder written by save_to_disk",
        ),
        (
            lambda f: (f / "train" / "dataset_info.json").write_text('{"features": 5}'),
            "'features' must be an object",
        ),
        (
            lambda f: next((f / "train").glob("*.arrow")).write_bytes(b"not arrow"),
            r"hf: not a readable dataset folder",
        ),
    ],
)
def test_damaged_save_to_disk_folders_are_corpus_errors(tmp_path: Path, damage, problem: str) -> None:
    folder = saved_dataset(tmp_path)
    damage(folder)
    with pytest.raises(CorpusError, match=problem):
        read_corpus(folder)


def test_a_nul_in_an_id_names_the_id(tmp_path: Path) -> None:
    docs, _ = read_corpus(write(tmp_path, "in.jsonl", '{"id": "a\\u0000b", "text": "fiebre"}\n'))
    with pytest.raises(CorpusError, match=r"id 'a\\x00b' holds '\\x00'"):
        write_corpus(docs, tmp_path / "out", "brat")
