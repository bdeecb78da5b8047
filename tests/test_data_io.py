"""Real corpora read with their SOURCE.md counts; offsets exact; brat and CoNLL round trips exact."""

from __future__ import annotations

import json
import os
import re
import stat
from collections import Counter
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

from cardioner.data import (
    Document,
    ReadReport,
    Span,
    detect_format,
    read_brat,
    read_conll,
    read_corpus,
    read_hf,
    read_jsonl,
    read_tsv,
    resolve_overlaps,
    write_brat,
    write_conll,
    write_corpus,
    write_jsonl,
    write_tsv,
)
from cardioner.data.brat import BOM_DROPPED
from cardioner.data.common import FRAGMENTS_SORTED
from cardioner.data.conll import IOB1_NOTE, TOKEN_EDGE_NOTE
from cardioner.data.document import BRAT_LINES_DROPPED, CorpusError

# (folder, split) -> (documents, entities), from each SOURCE.md
BRAT_COUNTS = {
    ("meddocan", "train"): (500, 11333),
    ("meddocan", "dev"): (250, 5801),
    ("meddocan", "test"): (250, 5661),
    ("ct_ebm_sp", "train"): (720, 28101),
    ("ct_ebm_sp", "dev"): (240, 9629),
    ("ct_ebm_sp", "test"): (240, 8969),
    ("ncbi_disease/standoff", "train"): (593, 5145),
    ("ncbi_disease/standoff", "devel"): (100, 787),
    ("ncbi_disease/standoff", "test"): (100, 960),
}
# file -> (documents, sentences, tokens, entities per type)
CONLL_COUNTS = {
    "conll2003/train.txt": (946, 14041, 203621, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
    "conll2003/dev.txt": (216, 3250, 51362, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    "conll2003/test.txt": (231, 3453, 46435, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}),
    "ncbi_disease/conll/train.tsv": (5432, 5432, 136086, {"Disease": 5145}),
    "ncbi_disease/conll/devel.tsv": (923, 923, 23969, {"Disease": 787}),
    "ncbi_disease/conll/test.tsv": (940, 940, 24497, {"Disease": 960}),
    "wnut17/train/wnut17train.conll": (
        3394,
        3394,
        62730,
        {
            "corporation": 221,
            "creative-work": 140,
            "group": 264,
            "location": 548,
            "person": 660,
            "product": 142,
        },
    ),
    "wnut17/dev/emerging.dev.conll": (
        1009,
        1009,
        15733,
        {"corporation": 34, "creative-work": 105, "group": 39, "location": 74, "person": 470, "product": 114},
    ),
    "wnut17/test/emerging.test.annotated": (
        1287,
        1287,
        23394,
        {
            "corporation": 66,
            "creative-work": 142,
            "group": 165,
            "location": 150,
            "person": 429,
            "product": 127,
        },
    ),
}
MEDDOCAN_TYPES_TRAIN = {"CALLE": 862, "FECHAS": 1231, "TERRITORIO": 1875, "ID_EMPLEO_PERSONAL_SANITARIO": 0}
CT_EBM_SP_TYPES_TRAIN = {"ANAT": 4023, "CHEM": 5577, "DISO": 7832, "PROC": 10669}  # 10,668 + the sT1 PROC


@pytest.fixture(scope="module")
def brat_corpora(shared_data: Path) -> dict[tuple[str, str], tuple[list[Document], ReadReport]]:
    """Every brat split, read once for this module."""
    out = {}
    for folder, split in BRAT_COUNTS:
        report = ReadReport()
        out[(folder, split)] = read_brat(shared_data / folder / split, report), report
    return out


# --- Done-when 1: every corpus reads with its SOURCE.md counts ---------------------------------------------


@pytest.mark.parametrize("key", list(BRAT_COUNTS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_brat_counts(brat_corpora, key) -> None:
    docs, report = brat_corpora[key]
    assert (len(docs), sum(len(d.spans) for d in docs)) == BRAT_COUNTS[key]
    assert (report.documents, report.spans) == BRAT_COUNTS[key]


def test_brat_type_counts_and_quirks(brat_corpora) -> None:
    meddocan = Counter(s.label for d in brat_corpora[("meddocan", "train")][0] for s in d.spans)
    assert {t: meddocan[t] for t in MEDDOCAN_TYPES_TRAIN} == MEDDOCAN_TYPES_TRAIN
    ct_docs, ct_report = brat_corpora[("ct_ebm_sp", "train")]
    assert dict(Counter(s.label for d in ct_docs for s in d.spans)) == CT_EBM_SP_TYPES_TRAIN
    assert ct_report.repaired["malformed T ids read as T<n>"] == 1  # the sT1 line, kept and said
    assert ct_report.kept_aside["brat # lines (note)"] == 20034
    ids = {d.id for d in ct_docs}
    assert "abstracts/S0370-41062019000600642" in ids
    ncbi = {d.id for d in brat_corpora[("ncbi_disease/standoff", "train")][0]}
    assert {"8528200", "8528200.1"} <= ncbi  # the duplicated abstract is two documents with distinct ids


@pytest.mark.parametrize("name", list(CONLL_COUNTS))
def test_conll_counts(shared_data: Path, name: str) -> None:
    num_docs, num_sentences, num_tokens, per_type = CONLL_COUNTS[name]
    report = ReadReport()
    docs = read_conll(shared_data / name, report)  # read in place, never copied
    assert len(docs) == report.documents == num_docs
    assert sum(len(d.meta["sentences"]) for d in docs) == num_sentences
    assert sum(len(d.meta["tokens"]) for d in docs) == num_tokens
    assert dict(Counter(s.label for d in docs for s in d.spans)) == per_type
    assert not report.repaired  # IOB2 files: nothing to repair
    for doc in docs[:50]:
        for start, end in doc.meta["tokens"]:
            assert doc.text[start:end].strip() == doc.text[start:end] != ""


def test_tsv_toy_counts(shared_data: Path) -> None:
    docs, report = read_corpus(shared_data / "multicardioner_eval_toy" / "ref")
    assert {d.id: len(d.spans) for d in docs} == {"casos_clinicos_cardiologia17": 6,
                                                   "casos_clinicos_cardiologia491": 22,
                                                   "casos_clinicos_cardiologia508": 24}
    assert all(d.meta["text_missing"] for d in docs)
    repeated = ReadReport()
    pred = (
        shared_data
        / "multicardioner_eval_toy"
        / "pred"
        / "multicardioner_test_task1_all_correct+repeated.tsv"
    )
    docs_rep = read_tsv(pred, report=repeated)
    assert sum(len(d.spans) for d in docs_rep) == 52
    assert sum(repeated.skipped.values()) == 7


def test_detect_format(shared_data: Path) -> None:
    assert detect_format(shared_data / "meddocan") == "brat"
    assert detect_format(shared_data / "ncbi_disease" / "conll" / "train.tsv") == "conll"
    assert detect_format(shared_data / "conll2003") == "conll"
    assert detect_format(shared_data / "multicardioner_eval_toy" / "ref") == "tsv"


def test_read_corpus_folder_ids(shared_data: Path) -> None:
    docs, report = read_corpus(shared_data / "wnut17" / "dev")
    assert docs[0].id == "emerging.dev#1" and report.documents == 1009


# --- Done-when 2: every brat annotation's string equals its text slice --------------------------------------


def test_brat_slices_match_annotated_strings(shared_data: Path, brat_corpora) -> None:
    checked = 0
    bom_files = 0
    for (folder, split), (docs, _) in brat_corpora.items():
        for doc in docs:
            ann = (shared_data / folder / split / f"{doc.id}.ann").read_text(encoding="utf-8")
            rows = [line.split("\t") for line in ann.split("\n")]
            strings = [row[2] for row in rows if re.fullmatch(r"\S*T\d+", row[0])]  # incl. the malformed sT1
            assert [doc.text[s.start : s.end] for s in doc.spans] == strings
            checked += len(strings)
            if folder == "meddocan" and doc.text.startswith("\ufeff"):
                bom_files += 1
                assert (
                    (shared_data / folder / split / f"{doc.id}.txt").read_bytes().startswith(b"\xef\xbb\xbf")
                )
    assert bom_files == 32
    assert checked == sum(n for _, n in BRAT_COUNTS.values())


# --- Done-when 3: round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", [("meddocan", "dev"), ("ct_ebm_sp", "dev"), ("ncbi_disease/standoff", "devel")], ids=lambda k: k[0]
)
def test_brat_round_trip_is_byte_exact(shared_data: Path, tmp_path: Path, brat_corpora, key) -> None:
    docs, _ = brat_corpora[key]
    write_brat(docs, tmp_path / "out")
    source = shared_data / key[0] / key[1]
    for doc in docs:
        assert (tmp_path / "out" / f"{doc.id}.txt").read_bytes() == (source / f"{doc.id}.txt").read_bytes()
        assert (tmp_path / "out" / f"{doc.id}.ann").read_bytes() == (source / f"{doc.id}.ann").read_bytes()
    again = read_brat(tmp_path / "out")
    assert [(d.id, d.text, d.spans) for d in again] == [(d.id, d.text, d.spans) for d in docs]


def _conll_lines(path: Path) -> list[str]:
    """Lines without CR, whitespace-only lines as blank, trailing blanks dropped."""
    lines = [
        "" if not line.strip() else line
        for line in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n")
    ]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize(
    "name", ["conll2003/dev.txt", "ncbi_disease/conll/devel.tsv", "wnut17/train/wnut17train.conll"]
)
def test_conll_round_trip_same_tokens_and_tags(shared_data: Path, tmp_path: Path, name: str) -> None:
    docs = read_conll(shared_data / name)
    write_conll(docs, tmp_path / "out.conll")
    assert _conll_lines(tmp_path / "out.conll") == _conll_lines(shared_data / name)


IOB1 = "-DOCSTART- O\n\nJohn I-PER\nSmith I-PER\nB-PER... B-PER\nin O\nParis I-LOC\n\nBerlin I-LOC\n"


def test_conll_iob1_normalised_to_iob2_and_reported(tmp_path: Path) -> None:
    (tmp_path / "iob1.txt").write_text(IOB1, encoding="utf-8")
    report = ReadReport()
    docs = read_conll(tmp_path / "iob1.txt", report)
    assert docs[0].meta["scheme"] == "IOB1"
    assert [(docs[0].text[s.start : s.end], s.label) for s in docs[0].spans] == [
        ("John Smith", "PER"), ("B-PER...", "PER"), ("Paris", "LOC"), ("Berlin", "LOC")]
    assert report.repaired[IOB1_NOTE] == 3
    assert "IOB1 tags normalised to IOB2" in report.summary()
    write_conll(docs, tmp_path / "out.txt")
    tags = [
        line.split()[-1]
        for line in _conll_lines(tmp_path / "out.txt")
        if line and not line.startswith("-DOC")
    ]
    assert tags == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-LOC"]


def test_bioes_and_bioes_output(tmp_path: Path) -> None:
    (tmp_path / "b.conll").write_text("a\tB-X\nb\tE-X\nc\tS-Y\nd\tO\n", encoding="utf-8")
    docs = read_conll(tmp_path / "b.conll")
    assert docs[0].meta["scheme"] == "BIOES" and docs[0].id == "b#1"
    assert [(s.start, s.end, s.label) for s in docs[0].spans] == [(0, 3, "X"), (4, 5, "Y")]
    write_conll(docs, tmp_path / "o.conll", scheme="BIOES")
    assert (tmp_path / "o.conll").read_text() == "a\tB-X\nb\tE-X\nc\tS-Y\nd\tO\n\n"


def test_brat_to_conll_tokenises_by_regex(tmp_path: Path) -> None:
    doc = Document("d", "Dolor en el pecho.\nSin fiebre", [Span(0, 5, "SYM"), Span(9, 17, "ANAT")])
    report = ReadReport()
    from cardioner.data import write_corpus

    write_corpus([doc], tmp_path / "d.conll", "conll", report=report)
    back = read_conll(tmp_path / "d.conll")[0]
    assert [(back.text[s.start : s.end], s.label) for s in back.spans] == [
        ("Dolor", "SYM"),
        ("el pecho", "ANAT"),
    ]
    assert back.text == "Dolor en el pecho .\nSin fiebre"
    assert not report.repaired


# --- other formats: JSONL, HF, TSV ------------------------------------------------------------------------


def test_jsonl_three_forms(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "a", "text": "chest pain", "spans": [{"start": 6, "end": 10, "label": "SYM", "text":'
        ' "pain"}]}\n{"id": "b", "text": "fever", "tags": [{"start": 0, "end": 5, "tag": "SYM"}]}\n{"tokens":'
        ' ["no", "chest", "pain"], "ner_tags": [0, 1, 2]}\n',
        encoding="utf-8",
    )
    report = ReadReport()
    docs = read_jsonl(path, report, label_names=["O", "B-SYM", "I-SYM"])
    assert [d.id for d in docs] == ["a", "b", "c#3"]
    assert [[d.text[s.start : s.end] for s in d.spans] for d in docs] == [["pain"], ["fever"], ["chest pain"]]
    write_jsonl(docs, tmp_path / "o.jsonl")
    again = read_jsonl(tmp_path / "o.jsonl")
    assert [(d.id, d.text, d.spans) for d in again] == [(d.id, d.text, d.spans) for d in docs]


def test_jsonl_discontinuous_round_trip(tmp_path: Path) -> None:
    doc = Document("d", "left and right kidney", [Span(0, 21, "ANAT", ((0, 4), (15, 21)))])
    write_jsonl([doc], tmp_path / "d.jsonl")
    write_brat(read_jsonl(tmp_path / "d.jsonl"), tmp_path / "brat")
    assert (tmp_path / "brat" / "d.ann").read_text() == "T1\tANAT 0 4;15 21\tleft kidney\n"
    assert read_brat(tmp_path / "brat")[0].spans == doc.spans


def test_hf_dataset_dict_and_disk(tmp_path: Path) -> None:
    features = Features({"tokens": Sequence(Value("string")),
                         "ner_tags": Sequence(ClassLabel(names=["O", "B-PER", "I-PER"]))})
    dd = DatasetDict(
        {
            "train": Dataset.from_dict(
                {"tokens": [["Ana", "Gil", "came"]], "ner_tags": [[1, 2, 0]]}, features=features
            ),
            "test": Dataset.from_dict(
                {"text": ["Dr. Ruiz"], "spans": [[{"start": 4, "end": 8, "label": "PER"}]]}
            ),
        }
    )
    docs = read_hf(dd)
    assert [(d.id, [d.text[s.start : s.end] for s in d.spans]) for d in docs] == [("train#1", ["Ana Gil"]),
                                                                                  ("test#1", ["Ruiz"])]
    dd.save_to_disk(str(tmp_path / "ds"))
    docs2, report = read_corpus(tmp_path / "ds")
    assert detect_format(tmp_path / "ds") == "hf" and report.documents == 2
    assert [d.spans for d in docs2] == [d.spans for d in docs]
    assert [d.id for d in read_hf(tmp_path / "ds", split="test")] == ["test#1"]


def test_tsv_with_texts_and_round_trip(tmp_path: Path) -> None:
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "c1.txt").write_text("Paciente con HTA y diabetes.", encoding="utf-8")
    (tmp_path / "a.tsv").write_text(
        "filename\tlabel\tstart_span\tend_span\ttext\nc1\tENFERMEDAD\t13\t16\tHTA\n"
        "c1\tENFERMEDAD\t19\t27\tdiabetes\n",
        encoding="utf-8",
    )
    docs = read_tsv(tmp_path / "a.tsv", texts_dir=tmp_path / "texts")
    assert docs[0].text.startswith("Paciente") and len(docs[0].spans) == 2
    write_tsv(docs, tmp_path / "b.tsv")
    assert (tmp_path / "b.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()
    bare = read_tsv(tmp_path / "a.tsv")
    write_tsv(bare, tmp_path / "c.tsv")
    write_jsonl(bare, tmp_path / "c.jsonl")
    write_tsv(read_jsonl(tmp_path / "c.jsonl"), tmp_path / "d.tsv")
    assert (
        (tmp_path / "c.tsv").read_bytes()
        == (tmp_path / "d.tsv").read_bytes()
        == (tmp_path / "a.tsv").read_bytes()
    )


def test_brat_kept_lines_and_txt_without_ann(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("aspirin 100 mg", encoding="utf-8", newline="")
    ann = (
        "T1\tCHEM 0 7\taspirin\n#1\tAnnotatorNotes T1\tC0004057\nR1\tDose Arg1:T1 Arg2:T2\nT2\tDOSE 8 14\t100"
        " mg\n"
    )
    (tmp_path / "sub" / "a.ann").write_text(ann, encoding="utf-8", newline="")
    (tmp_path / "b.txt").write_text("nothing", encoding="utf-8")
    docs, report = read_corpus(tmp_path)
    assert [d.id for d in docs] == ["b", "sub/a"]
    assert report.kept_aside["brat # lines (note)"] == 1 and report.kept_aside["brat R lines (relation)"] == 1
    assert report.skipped[".txt files without .ann (read with no spans)"] == 1
    write_brat(docs, tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "a.ann").read_text(encoding="utf-8") == ann
    assert (tmp_path / "out" / "b.ann").read_text() == ""


# --- fixes found in review: what is read, written and reported ---------------------------------------------

CHEST = "dolor en el pecho y fiebre"
CHEST_ANN = ("T1\tDISO 20 26\tfiebre\n#1\tAnnotatorNotes T1\tC0015967 (fever)\n"
             "T2\tDISO 0 17\tdolor en el pecho\n#2\tAnnotatorNotes T2\tC0008031 (chest pain)\n")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, hidden ones included, with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _brat_folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content, encoding="utf-8", newline="")
    return root


def test_resolve_overlaps_keeps_brat_ids_and_notes_on_their_entities(tmp_path: Path) -> None:
    ann = (
        CHEST_ANN
        + "T3\tANAT 12 17\tpecho\n#3\tAnnotatorNotes T3\tC0817096 (chest)\nR1\tPart Arg1:T3 Arg2:T2\n"
        "E1\tFinding:T1 Site:T3\nA1\tNegated E1\nN1\tReference T1 UMLS:C0015967\n"
    )
    docs = read_brat(_brat_folder(tmp_path / "in", {"a.txt": CHEST, "a.ann": ann}))
    flat, dropped = resolve_overlaps(docs[0])
    assert dropped == 1
    # file order
    assert [(s.start, s.end, s.label) for s in flat.spans] == [(20, 26, "DISO"), (0, 17, "DISO")]
    assert flat.meta["brat_ids"] == ["T1", "T2"]
    report = ReadReport()
    assert resolve_overlaps(docs[0], report)[0] == flat
    # the note, relation and event on T3 go with it, and so does the attribute on that event; all counted
    assert report.skipped[BRAT_LINES_DROPPED] == 4
    write_brat([flat], tmp_path / "out")
    assert (tmp_path / "out" / "a.ann").read_text(
        encoding="utf-8"
    ) == CHEST_ANN + "N1\tReference T1 UMLS:C0015967\n"


def test_resolve_overlaps_without_overlaps_writes_brat_back_unchanged(tmp_path: Path) -> None:
    docs = read_brat(_brat_folder(tmp_path / "in", {"a.txt": CHEST, "a.ann": CHEST_ANN}))
    flat, dropped = resolve_overlaps(docs[0])
    assert dropped == 0 and flat.spans == docs[0].spans and flat.meta == docs[0].meta
    write_brat([flat], tmp_path / "out")
    assert (tmp_path / "out" / "a.ann").read_text(encoding="utf-8") == CHEST_ANN


def test_convert_resolve_overlaps_keeps_every_note_on_its_entity(shared_data: Path, tmp_path: Path) -> None:
    from cardioner.data.io import convert_corpus

    source = shared_data / "ct_ebm_sp" / "dev"
    summary = convert_corpus(str(source), str(tmp_path / "out"), "brat", resolve=True)
    assert "overlapping spans dropped" in summary and BRAT_LINES_DROPPED in summary
    t_line = re.compile(r"^(T\d+)\t(\S+) ([\d; ]+)\t", re.M)
    note = re.compile(r"^(#\d+)\tAnnotatorNotes (T\d+)\t", re.M)
    notes = 0
    for ann_path in sorted((tmp_path / "out").rglob("*.ann")):
        written = ann_path.read_text(encoding="utf-8")
        original = (source / ann_path.relative_to(tmp_path / "out")).read_text(encoding="utf-8")
        entity = {m.group(1): m.group(2, 3) for m in t_line.finditer(written)}
        before = {m.group(1): m.group(2, 3) for m in t_line.finditer(original.replace("sT1\t", "T1\t"))}
        noted = {m.group(1): m.group(2) for m in note.finditer(original)}  # note id -> T id in the source
        # on the same entity (type, offsets) as in the source, never dangling
        for m in note.finditer(written):
            assert entity[m.group(2)] == before[noted[m.group(1)]], (ann_path, m.group(0))
            notes += 1
    assert 5000 < notes < 6846


def test_brat_lines_on_renumbered_entities_are_dropped_and_counted(tmp_path: Path) -> None:
    doc = read_brat(_brat_folder(tmp_path / "in", {"a.txt": CHEST, "a.ann": CHEST_ANN}))[0]
    doc.spans.append(Span(12, 17, "ANAT"))  # brat_ids no longer match: the T lines are renumbered
    report = ReadReport()
    write_corpus([doc], tmp_path / "out", "brat", report=report)
    assert (tmp_path / "out" / "a.ann").read_text(encoding="utf-8") == (
        "T1\tDISO 20 26\tfiebre\nT2\tDISO 0 17\tdolor en el pecho\nT3\tANAT 12 17\tpecho\n")
    assert report.skipped[BRAT_LINES_DROPPED] == 2


def test_jsonl_text_with_tokens_and_ner_tags_aligns_the_tokens(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"id": "s1", "text": "John  Smith\\nran", "tokens": ["John", "Smith", "ran"], '
        '"ner_tags": ["B-PER", "I-PER", "O"]}\n{"id": "s2", "text": "only text"}\n',
        encoding="utf-8",
    )
    docs, report = read_corpus(path)
    assert [(d.id, d.text, [(s.start, s.end, s.label) for s in d.spans]) for d in docs] == [
        ("s1", "John  Smith\nran", [(0, 11, "PER")]), ("s2", "only text", [])]
    assert docs[0].meta["tokens"] == [[0, 4], [6, 11], [12, 15]] and report.spans == 1
    dataset = Dataset.from_dict(
        {"text": ["Ana  Gil"], "tokens": [["Ana", "Gil"]], "ner_tags": [["B-PER", "I-PER"]]}
    )
    assert [(s.start, s.end) for s in read_hf(dataset)[0].spans] == [(0, 8)]  # HF rows take the same path


def test_hf_missing_span_text_is_absent(tmp_path: Path) -> None:
    rows = [
        {
            "id": "a",
            "text": "fiebre alta",
            "spans": [
                {"start": 0, "end": 6, "label": "S", "text": "fiebre"},
                {"start": 7, "end": 11, "label": "S"},
            ],
        }
    ]
    docs = read_hf(Dataset.from_list(rows))  # Arrow gives the second span "text": None
    assert [(s.start, s.end, s.label) for s in docs[0].spans] == [(0, 6, "S"), (7, 11, "S")]


def test_brat_fragments_out_of_order_are_sorted_and_counted(tmp_path: Path) -> None:
    ann = "T1\tSINTOMA 12 17;0 5\tpecho dolor\nT2\tSINTOMA 20 26\tfiebre\n"
    report = ReadReport()
    docs = read_brat(_brat_folder(tmp_path / "in", {"a.txt": CHEST, "a.ann": ann}), report)
    assert docs[0].spans[0] == Span(0, 17, "SINTOMA", ((0, 5), (12, 17)))
    assert report.repaired[FRAGMENTS_SORTED] == 1
    write_brat(docs, tmp_path / "out")
    assert (
        tmp_path / "out" / "a.ann"
    ).read_text() == "T1\tSINTOMA 0 5;12 17\tdolor pecho\nT2\tSINTOMA 20 26\tfiebre\n"
    (tmp_path / "a.jsonl").write_text(
        json.dumps(
            {
                "id": "a",
                "text": CHEST,
                "spans": [
                    {
                        "start": 12,
                        "end": 5,
                        "label": "S",
                        "fragments": [[12, 17], [0, 5]],
                        "text": "pecho dolor",
                    }
                ],
            }
        )
        + "\n"
    )
    assert read_jsonl(tmp_path / "a.jsonl")[0].spans == [Span(0, 17, "S", ((0, 5), (12, 17)))]


def test_tsv_round_trip_of_spans_across_lines_and_discontinuous(tmp_path: Path) -> None:
    text = "dolor\ntorácico y\r\nfiebre en el pecho"
    doc = Document("doc1", text, [Span(0, 14, "SINTOMA"), Span(15, 24, "SINTOMA"),
                                  Span(18, 36, "SINTOMA", ((18, 24), (31, 36)))])
    write_brat([doc], tmp_path / "brat")
    write_tsv(read_brat(tmp_path / "brat"), tmp_path / "out.tsv")
    assert (tmp_path / "out.tsv").read_text(encoding="utf-8").split("\n")[1:] == [
        "doc1\tSINTOMA\t0\t14\tdolor torácico", "doc1\tSINTOMA\t15\t24\ty fiebre",
        "doc1\tSINTOMA\t18\t36\tfiebre en el pecho", ""]
    back = read_tsv(tmp_path / "out.tsv", texts_dir=tmp_path / "brat")
    assert [(s.start, s.end, s.label) for s in back[0].spans] == [(0, 14, "SINTOMA"), (15, 24, "SINTOMA"),
                                                                    (18, 36, "SINTOMA")]


BOM = "\ufeff"


@pytest.mark.parametrize(
    "name, content",
    [
        (
            "a.jsonl",
            BOM + '{"id": "x", "text": "EU rejects", "spans": [{"start": 0, "end": 2, "label": "ORG"}]}\n',
        ),
        ("b.conll", BOM + "-DOCSTART- O\n\nEU\tB-ORG\nrejects\tO\n"),
        ("c.conll", BOM + "EU NNP B-ORG\nrejects VBZ O\n"),
        ("d.tsv", BOM + "filename\tlabel\tstart_span\tend_span\ttext\nx\tORG\t0\t2\tEU\n"),
    ],
)
def test_bom_at_the_start_of_a_data_file_is_not_data(tmp_path: Path, name: str, content: str) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    docs, _ = read_corpus(tmp_path / name)  # the format is detected through the BOM too
    span = docs[0].spans[0]
    assert (span.start, span.end, span.label) == (0, 2, "ORG")
    assert not docs[0].text.startswith(BOM) and docs[0].meta.get("span_texts", ["EU"]) == ["EU"]
    assert docs[0].text[:2] in ("EU", "")  # a bare TSV has no text


def test_bom_in_ann_file_and_brat_text_offsets_with_or_without_it(tmp_path: Path) -> None:
    folder = _brat_folder(tmp_path / "brat", {
        "a.txt": "fiebre alta", "a.ann": BOM + "#1\tAnnotatorNotes T1\tC0015967\nT1\tS 0 6\tfiebre\n",
        "counted.txt": BOM + "fiebre alta", "counted.ann": "T1\tS 1 7\tfiebre\n",
        "ignored.txt": BOM + "fiebre alta", "ignored.ann": "T1\tS 0 6\tfiebre\nT2\tS 7 11\talta\n",
    })
    report = ReadReport()
    docs = {d.id: d for d in read_brat(folder, report)}
    assert docs["a"].meta["brat_other"] == [[0, "#1\tAnnotatorNotes T1\tC0015967"]]
    assert docs["counted"].text == BOM + "fiebre alta" and docs["counted"].spans == [Span(1, 7, "S")]
    assert docs["ignored"].text == "fiebre alta" and docs["ignored"].meta["bom_dropped"] is True
    assert docs["ignored"].spans == [Span(0, 6, "S"), Span(7, 11, "S")]
    assert report.repaired[BOM_DROPPED] == 1 and report.kept_aside["brat # lines (note)"] == 1


def test_conll_whitespace_nbsp_token_tag_padding_and_spaced_docstart(tmp_path: Path) -> None:
    (tmp_path / "a.conll").write_text("-DOCSTART- -X- -X- O\n\nEU\tB-ORG \nrejects\tO\nGerman\tB-MISC\n",
                                      encoding="utf-8")
    doc = read_conll(tmp_path / "a.conll")[0]
    assert [(s.label, doc.text[s.start : s.end]) for s in doc.spans] == [("ORG", "EU"), ("MISC", "German")]
    (tmp_path / "b.conll").write_text("Il O\npaie  O\n10\u00a0000 B-NUM\neuros O\n", encoding="utf-8")
    doc = read_conll(tmp_path / "b.conll")[0]
    assert (
        doc.text == "Il paie 10\u00a0000 euros"
        and doc.text[doc.spans[0].start : doc.spans[0].end] == "10\u00a0000"
    )


def test_conll_writer_counts_a_span_on_no_token_as_skipped(tmp_path: Path) -> None:
    doc = Document("a", "fiebre  alta", [Span(6, 8, "WS"), Span(8, 12, "S"), Span(0, 3, "P")])
    report = ReadReport()
    write_conll([doc], tmp_path / "o.conll", report=report)
    assert report.skipped == {"spans covering no CoNLL token (not written)": 1}
    assert report.repaired == {TOKEN_EDGE_NOTE: 1}  # fie|bre: written as the whole token
    assert [s.label for s in read_conll(tmp_path / "o.conll")[0].spans] == ["P", "S"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int) -> None:
    docs = [Document("a", "fiebre", [Span(0, 6, "S")])]
    previous = os.umask(umask)
    try:
        write_jsonl(docs, tmp_path / "out.jsonl")
        write_brat(docs, tmp_path / "brat")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "brat").stat().st_mode) == 0o777 & ~umask


def test_brat_reader_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    folder = _brat_folder(tmp_path / "brat", {
        "a.txt": "fiebre", "a.ann": "T1\tS 0 6\tfiebre\n",
        ".ipynb_checkpoints/a-checkpoint.txt": "old", ".ipynb_checkpoints/a-checkpoint.ann": "",
        ".out.x1y2.tmp/b.txt": "half-written", ".hidden.txt": "x",
    })
    assert detect_format(folder) == "brat"
    docs, report = read_corpus(folder)
    assert [d.id for d in docs] == ["a"] and report.documents == 1


def test_write_brat_into_an_existing_folder_keeps_other_files(tmp_path: Path, monkeypatch) -> None:
    """An earlier output written into: other files stay, these documents' are replaced, and a failure
    part-way leaves the folder as it was."""
    write_brat([Document("a", "fiebre alta", []), Document("sub/b", "tos", [])], tmp_path / "notes")
    folder = _brat_folder(tmp_path / "notes", {"README.md": "keep me", "other/c.ann": "T1\tS 0 1\tx\n"})
    docs = [Document("a", "fiebre alta", [Span(0, 6, "S")]), Document("sub/b", "tos", [Span(0, 3, "S")])]
    write_brat(docs, folder)
    assert (folder / "README.md").read_text() == "keep me" and (folder / "other/c.ann").exists()
    assert (folder / "a.ann").read_text() == "T1\tS 0 6\tfiebre\n"
    assert (folder / "sub/b.ann").read_text() == "T1\tS 0 3\ttos\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no staging folder left

    def fail(doc, report=None, score_notes=False):
        raise OSError("disk full")

    monkeypatch.setattr("cardioner.data.brat.format_ann", fail)
    with pytest.raises(OSError, match="disk full"):
        write_brat([Document("a", "fiebre alta", [])], folder)
    assert (folder / "a.ann").read_text() == "T1\tS 0 6\tfiebre\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
    with pytest.raises(CorpusError, match="refusing to overwrite"):
        write_brat(docs, folder, overwrite=False)


def test_predict_inputs_skip_hidden_folders(tmp_path: Path) -> None:
    from cardioner.inference import read_inputs

    folder = _brat_folder(
        tmp_path / "notes",
        {
            "a.txt": "fiebre",
            ".ipynb_checkpoints/a-checkpoint.txt": "old",
            ".notes.k2j.tmp/b.txt": "half-written",
            "sub/c.txt": "tos",
        },
    )
    assert [doc.id for doc in read_inputs(folder)] == ["a", "sub/c"]


def test_convert_to_brat_replaces_only_the_files_it_wrote(tmp_path: Path) -> None:
    from cardioner.data.io import convert_corpus

    ann = "T1\tX 0 5\tHello\nR1\tRel Arg1:T1 Arg2:T1\n"
    source = _brat_folder(tmp_path / "src", {"a.txt": "Hello big world.", "a.ann": ann})
    gold = _brat_folder(tmp_path / "gold", {"a.txt": "Hello big world.", "a.ann": "T1\tY 6 9\tbig\n"})
    project = _brat_folder(tmp_path / "P", {"docs/readme.txt": "hi", "notes.md": "mine"})
    for folder in (gold, project):  # no record: not an output of ours, however brat it looks
        before = tree(folder)
        with pytest.raises(CorpusError, match="the output is a folder that is neither empty nor a brat "
                           "folder cardioner wrote"):
            convert_corpus(source, folder, "brat")
        assert tree(folder) == before
    out = tmp_path / "out"
    convert_corpus(source, out, "brat")
    assert (out / "a.ann").read_text(encoding="utf-8") == ann and (out / ".cardioner.jsonl").exists()
    (source / "a.txt").write_text("Hello small world.", encoding="utf-8")  # ours, text and all: replaced
    convert_corpus(source, out, "brat")
    assert (out / "a.txt").read_text(encoding="utf-8") == "Hello small world."
    (out / "a.ann").write_text(ann + "#1\tAnnotatorNotes T1\tchecked\n", encoding="utf-8")  # corrected
    before = tree(out)
    with pytest.raises(CorpusError, match="out/a.ann: exists and cardioner's record"):
        convert_corpus(source, out, "brat")
    assert tree(out) == before
