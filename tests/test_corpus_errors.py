"""One test per bad-input case: a CorpusError that names the file, the line (or record) and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardioner.data import CorpusError, ReadReport, read_brat, read_conll, read_corpus, read_jsonl
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
    with pytest.raises(CorpusError, match=r"doc\.ann:2: .*2-40 \(X\) ends past the end of the text \(5 characters\)"):
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
    assert [(doc.text[s.start : s.end], s.label) for s in doc.spans] == [("New", "LOC"), ("York Times", "ORG"),
                                                                         ("so", "PER")]
    assert report.repaired[REPAIR_NOTE] == 1 and REPAIR_NOTE in report.summary()


def test_inconsistent_column_count(tmp_path: Path) -> None:
    path = write(tmp_path, "a.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-MISC\n")
    with pytest.raises(CorpusError, match=r"a\.txt:3: inconsistent column count: 3 columns .* but 4 on line 1"):
        read_conll(path)


@pytest.mark.parametrize("name, content", [("a.conll", ""), ("a.jsonl", "\n\n"), ("a.tsv", "")])
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(CorpusError, match=r"a\.(conll|jsonl|tsv): (empty file|file contains only whitespace)"):
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
    path = write(tmp_path, "a.jsonl", '{"id": "x", "text": "a"}\n{"id": "y", "text": "b"}\n{"id": "x", "text": "c"}\n')
    with pytest.raises(CorpusError, match=r"a\.jsonl: duplicate document id 'x' \(documents 1 and 3"):
        read_corpus(path)


def test_overlapping_spans_in_flat_task_show_both(tmp_path: Path) -> None:
    folder = brat(tmp_path, "presión arterial alta", "T1\tPROC 0 16\tpresión arterial\nT2\tANAT 8 16\tarterial\n")
    docs, _ = read_corpus(folder)  # fine for a multi-label task
    assert len(docs[0].spans) == 2
    with pytest.raises(CorpusError, match=r"doc\.ann: .*overlapping spans 0-16 PROC 'presión arterial' and "
                                          r"8-16 ANAT 'arterial'"):
        read_corpus(folder, flat=True)


def test_nothing_dropped_silently_report(tmp_path: Path) -> None:
    folder = brat(tmp_path, "a b", "T1\tX 0 1\ta\n\nA1\tNeg T1\n")
    brat(tmp_path, "no ann", None, name="other")
    _, report = read_corpus(folder)
    summary = report.summary()
    assert "read 2 documents, 1 spans" in summary
    assert "1 blank lines in .ann files" in summary and "1 brat A lines (attribute)" in summary
    assert "1 .txt files without .ann" in summary
