"""Real corpora read with their SOURCE.md counts; offsets exact; brat and CoNLL round trips exact."""

from __future__ import annotations

import re
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
    write_brat,
    write_conll,
    write_jsonl,
    write_tsv,
)
from cardioner.data.conll import IOB1_NOTE

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
    "wnut17/train/wnut17train.conll": (3394, 3394, 62730, {"corporation": 221, "creative-work": 140, "group": 264,
                                                           "location": 548, "person": 660, "product": 142}),
    "wnut17/dev/emerging.dev.conll": (1009, 1009, 15733, {"corporation": 34, "creative-work": 105, "group": 39,
                                                         "location": 74, "person": 470, "product": 114}),
    "wnut17/test/emerging.test.annotated": (1287, 1287, 23394, {"corporation": 66, "creative-work": 142,
                                                               "group": 165, "location": 150, "person": 429,
                                                               "product": 127}),
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
    pred = shared_data / "multicardioner_eval_toy" / "pred" / "multicardioner_test_task1_all_correct+repeated.tsv"
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


# --- Done-when 2: every brat annotation's string equals its text slice ---------------------------------------


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
                assert (shared_data / folder / split / f"{doc.id}.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    assert bom_files == 32
    assert checked == sum(n for _, n in BRAT_COUNTS.values())


# --- Done-when 3: round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [("meddocan", "dev"), ("ct_ebm_sp", "dev"), ("ncbi_disease/standoff", "devel")],
                         ids=lambda k: k[0])
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
    lines = ["" if not line.strip() else line for line in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize("name", ["conll2003/dev.txt", "ncbi_disease/conll/devel.tsv", "wnut17/train/wnut17train.conll"])
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
    tags = [line.split()[-1] for line in _conll_lines(tmp_path / "out.txt") if line and not line.startswith("-DOC")]
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
    assert [(back.text[s.start : s.end], s.label) for s in back.spans] == [("Dolor", "SYM"), ("el pecho", "ANAT")]
    assert back.text == "Dolor en el pecho .\nSin fiebre"
    assert not report.repaired


# --- other formats: JSONL, HF, TSV ------------------------------------------------------------------------


def test_jsonl_three_forms(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "a", "text": "chest pain", "spans": [{"start": 6, "end": 10, "label": "SYM", "text": "pain"}]}\n'
        '{"id": "b", "text": "fever", "tags": [{"start": 0, "end": 5, "tag": "SYM"}]}\n'
        '{"tokens": ["no", "chest", "pain"], "ner_tags": [0, 1, 2]}\n',
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
    dd = DatasetDict({"train": Dataset.from_dict({"tokens": [["Ana", "Gil", "came"]], "ner_tags": [[1, 2, 0]]},
                                                 features=features),
                      "test": Dataset.from_dict({"text": ["Dr. Ruiz"],
                                                 "spans": [[{"start": 4, "end": 8, "label": "PER"}]]})})
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
    (tmp_path / "a.tsv").write_text("filename\tlabel\tstart_span\tend_span\ttext\nc1\tENFERMEDAD\t13\t16\tHTA\n"
                                    "c1\tENFERMEDAD\t19\t27\tdiabetes\n", encoding="utf-8")
    docs = read_tsv(tmp_path / "a.tsv", texts_dir=tmp_path / "texts")
    assert docs[0].text.startswith("Paciente") and len(docs[0].spans) == 2
    write_tsv(docs, tmp_path / "b.tsv")
    assert (tmp_path / "b.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()
    bare = read_tsv(tmp_path / "a.tsv")
    write_tsv(bare, tmp_path / "c.tsv")
    write_jsonl(bare, tmp_path / "c.jsonl")
    write_tsv(read_jsonl(tmp_path / "c.jsonl"), tmp_path / "d.tsv")
    assert (tmp_path / "c.tsv").read_bytes() == (tmp_path / "d.tsv").read_bytes() == (tmp_path / "a.tsv").read_bytes()


def test_brat_kept_lines_and_txt_without_ann(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("aspirin 100 mg", encoding="utf-8", newline="")
    ann = "T1\tCHEM 0 7\taspirin\n#1\tAnnotatorNotes T1\tC0004057\nR1\tDose Arg1:T1 Arg2:T2\nT2\tDOSE 8 14\t100 mg\n"
    (tmp_path / "sub" / "a.ann").write_text(ann, encoding="utf-8", newline="")
    (tmp_path / "b.txt").write_text("nothing", encoding="utf-8")
    docs, report = read_corpus(tmp_path)
    assert [d.id for d in docs] == ["b", "sub/a"]
    assert report.kept_aside["brat # lines (note)"] == 1 and report.kept_aside["brat R lines (relation)"] == 1
    assert report.skipped[".txt files without .ann (read with no spans)"] == 1
    write_brat(docs, tmp_path / "out")
    assert (tmp_path / "out" / "sub" / "a.ann").read_text(encoding="utf-8") == ann
    assert (tmp_path / "out" / "b.ann").read_text() == ""
