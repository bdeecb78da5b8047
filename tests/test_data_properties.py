"""Property-based tests of every reader and writer (issue 15, Done-when 2): brat, CoNLL, JSONL, TSV and HF.

For each format, two properties:

- **round trip**: valid documents (any Unicode text, overlapping and discontinuous spans where the format
  holds them, ids with sub-folders) written and read back are the same documents;
- **hostile input**: files built from the format's grammar with every field mutated (huge, signed, fractional,
  non-ASCII or missing numbers, wrong types, broken strings, stray line breaks, garbage lines) are either read
  — and then every span is exactly the one the file states (checked by a small reference parser in this file)
  and reads back the same after writing — or refused with a CorpusError/ConfigError; never another exception.

The fast suite runs a few dozen derandomised examples per test (seconds); the slow run (``-m slow -k
properties``) runs SLOW_EXAMPLES per test, so at least 3,000 per format and property
(``CARDIONER_PROPERTY_EXAMPLES=N`` for another number).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardioner.config import ConfigError
from cardioner.data import CorpusError, Document, ReadReport, Span, read_corpus, read_hf, write_corpus
from cardioner.data.brat import one_line
from cardioner.data.jsonl import document_to_record
from cardioner.data.paths import id_key

FAST_EXAMPLES = 25
SLOW_EXAMPLES = int(os.environ.get("CARDIONER_PROPERTY_EXAMPLES", "3000"))  # more for a longer hunt
COMMON = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))
ALLOWED = (CorpusError, ConfigError)


def property_tests(strategy: st.SearchStrategy, check: Callable) -> tuple[Callable, Callable]:
    """A fast (derandomised) and a slow test of ``check`` over ``strategy``."""
    fast = settings(max_examples=FAST_EXAMPLES, derandomize=True, **COMMON)(given(strategy)(check))
    slow = pytest.mark.slow(settings(max_examples=SLOW_EXAMPLES, **COMMON)(given(strategy)(check)))
    return fast, slow


# ----------------------------------------------------------------------------------------- strategies
LABELS = st.sampled_from(["DISEASE", "Chemical", "SÍNTOMA", "B", "x-y", "T1", "ENFERMEDAD_2"])
ID_PART = st.text(st.characters(categories=("Ll", "Lu", "Nd"), max_codepoint=0x24F) | st.sampled_from("-_"),
                  min_size=1, max_size=8)
BRAT_IDS = st.lists(st.lists(ID_PART, min_size=1, max_size=3).map("/".join), min_size=1, max_size=4,
                    unique_by=id_key)
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
#: characters that stress offsets: line breaks of every kind, BOM, NBSP, tabs, combining marks, astral planes
TRICKY = st.sampled_from(
    ["\n", "\r\n", "\r", "\t", "\ufeff", "\u00a0", "\u2028", "\x85", "\x0b", "e\u0301", "🫀", " ", "  ", "á",
     "T1", ";", "#"]
)
TEXT = st.lists(st.one_of(ANY_TEXT, TRICKY), max_size=6).map("".join)


@st.composite
def spans_in(draw, text: str, discontinuous: bool = True, unique: bool = False) -> list[Span]:
    """Spans over ``text``: non-empty, possibly overlapping, some discontinuous."""
    spans: list[Span] = []
    if not text:
        return spans
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        label = draw(LABELS)
        if discontinuous and end - start >= 2 and draw(st.booleans()):
            cut = draw(st.integers(start + 1, end - 1))
            resume = draw(st.integers(cut, end - 1))
            spans.append(Span(start, end, label, ((start, cut), (resume, end))))
        else:
            spans.append(Span(start, end, label))
    if unique:
        spans = list(dict.fromkeys(spans))
    return spans


@st.composite
def documents(draw, ids: st.SearchStrategy, discontinuous: bool = True, unique: bool = False,
              min_spans: int = 0) -> list[Document]:
    docs = [Document(doc_id, text, draw(spans_in(text, discontinuous, unique)))
            for doc_id in draw(ids) for text in [draw(TEXT)]]
    return [doc for doc in docs if len(doc.spans) >= min_spans] or docs[:0]


def same(docs: list[Document], read: list[Document]) -> None:
    assert [(d.id, d.text, d.spans) for d in read] == [(d.id, d.text, d.spans) for d in docs]


def read_or_refuse(read: Callable) -> tuple[list[Document], ReadReport] | None:
    """``read()``, or None when it refuses the input with the
    project's own error (any other exception fails)."""
    try:
        return read()
    except ALLOWED:
        return None


# ----------------------------------------------------------------------------------------- round trips
def check_brat_round_trip(docs: list[Document]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        write_corpus(docs, Path(folder) / "out", "brat")
        read, _ = read_corpus(Path(folder) / "out", format="brat")
    same(sorted(docs, key=lambda d: d.id), read)


def check_jsonl_round_trip(docs: list[Document]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        write_corpus(docs, Path(folder) / "out.jsonl", "jsonl")
        read, _ = read_corpus(Path(folder) / "out.jsonl", format="jsonl")
    same(docs, read)


def check_tsv_round_trip(docs: list[Document]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        texts = Path(folder) / "texts"
        for doc in docs:
            (texts / doc.id).parent.mkdir(parents=True, exist_ok=True)
            (texts / f"{doc.id}.txt").write_text(doc.text, encoding="utf-8", newline="")
        write_corpus(docs, Path(folder) / "out.tsv", "tsv")
        if not docs:
            return
        read, _ = read_corpus(Path(folder) / "out.tsv", format="tsv", texts_dir=texts)
    same(docs, read)  # every document has a span: a TSV holds only spans


def check_hf_round_trip(docs: list[Document]) -> None:
    from datasets import Dataset

    records = [document_to_record(doc) for doc in docs]
    for record in records:  # Arrow wants one shape per column: every span with its fragments
        record["spans"] = [{**span, "fragments": span.get("fragments")} for span in record["spans"]]
    if not records:
        return
    read = read_hf(Dataset.from_list(records))
    same(docs, read)


@st.composite
def conll_sentences(draw) -> tuple[list[list[str]], list[list[str]], str]:
    """Sentences of tokens with IOB2 tags, and the separator (TAB, or space when no token holds one)."""
    token = st.text(
        st.characters(exclude_categories=("Cs", "Zl", "Zp", "Cc"), exclude_characters="\t\n\r\x85"),
        min_size=1,
        max_size=6,
    ).filter(lambda t: t.strip() and t != "-DOCSTART-")
    sentences, tags = [], []
    for _ in range(draw(st.integers(1, 4))):
        words = draw(st.lists(token, min_size=1, max_size=6))
        sentence_tags, i = [], 0
        while i < len(words):
            length = draw(st.integers(0, min(3, len(words) - i)))
            if length == 0:
                sentence_tags.append("O")
                i += 1
            else:
                label = draw(LABELS)
                sentence_tags += [f"B-{label}"] + [f"I-{label}"] * (length - 1)
                i += length
        sentences.append(words)
        tags.append(sentence_tags)
    spaced = all(" " not in w and w == w.strip() for s in sentences for w in s)
    return sentences, tags, " " if spaced and draw(st.booleans()) else "\t"


def conll_reference(sentences: list[list[str]], tags: list[list[str]]) -> tuple[str, list[Span]]:
    """The text and spans of IOB2 sentences: tokens joined by a space, sentences by a newline."""
    text, spans = "", []
    for n, (words, sentence_tags) in enumerate(zip(sentences, tags, strict=True)):
        if n:
            text += "\n"
        open_span = None
        for k, (word, tag) in enumerate(zip(words, sentence_tags, strict=True)):
            if k:
                text += " "
            start, text = len(text), text + word
            if tag.startswith("I-") and open_span is not None:
                open_span[1] = len(text)
                continue
            if open_span is not None:
                spans.append(Span(*open_span))
                open_span = None
            if tag.startswith("B-"):
                open_span = [start, len(text), tag[2:]]
        if open_span is not None:
            spans.append(Span(*open_span))
    return text, spans


def check_conll_round_trip(sample: tuple[list[list[str]], list[list[str]], str]) -> None:
    sentences, tags, separator = sample
    lines = "\n".join(
        "".join(f"{word}{separator}{tag}\n" for word, tag in zip(words, sentence_tags, strict=True))
        for words, sentence_tags in zip(sentences, tags, strict=True)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.conll"
        path.write_text("-DOCSTART-" + separator + "O\n\n" + lines, encoding="utf-8", newline="")
        read, _ = read_corpus(path, format="conll")
        text, spans = conll_reference(sentences, tags)
        assert [(d.text, d.spans) for d in read] == [(text, spans)]
        write_corpus(read, Path(folder) / "out.conll", "conll")
        again, _ = read_corpus(Path(folder) / "out.conll", format="conll")
        assert [(d.text, d.spans, d.meta["tokens"]) for d in again] == [(d.text, d.spans, d.meta["tokens"])
                                                                        for d in read]


test_brat_round_trip, test_brat_round_trip_slow = property_tests(documents(BRAT_IDS), check_brat_round_trip)
test_jsonl_round_trip, test_jsonl_round_trip_slow = property_tests(
    documents(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4, unique=True)),
    check_jsonl_round_trip,
)
test_tsv_round_trip, test_tsv_round_trip_slow = property_tests(
    documents(BRAT_IDS, discontinuous=False, unique=True, min_spans=1), check_tsv_round_trip)
test_hf_round_trip, test_hf_round_trip_slow = property_tests(documents(BRAT_IDS), check_hf_round_trip)
test_conll_round_trip, test_conll_round_trip_slow = property_tests(conll_sentences(), check_conll_round_trip)


# ----------------------------------------------------------------------------------------- hostile input
NUMBER = st.one_of(
    st.integers(-5, 80).map(str), st.integers(0, 10**30).map(str), st.just("9" * 5000), st.just("-0"),
    st.sampled_from(["+3", "1_0", "٣", "３", "0x1f", "1e3", "1.5", " 4", "4 ", "", "NaN", "Infinity", "-"]),
)
JUNK_LINE = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", " ", "\t", "T", "T1", "T1\t", "\ufeff", "#", "R1\tRel Arg1:T1 Arg2:T9", "A1\tNeg T1",
         "*\tEq T1 T2"]
    ),
)


def reference_brat(text: str, ann: str) -> list[tuple[str, tuple[tuple[int, int], ...]]] | None:
    """(label, sorted pieces) of each T line, when every T
    line is well-formed and fits ``text``; else None."""
    spans = []
    for line in ann.removeprefix("\ufeff").split("\n"):
        line = line.removesuffix("\r")
        if not line.strip() or line[0] in "AMRENM#*":
            continue
        match = re.fullmatch(r"\S*T\d+\t(\S+) ([0-9]+ [0-9]+(?:;[0-9]+ [0-9]+)*)\t(.*)", line)
        if match is None:
            return None
        pieces = tuple(tuple(int(x) for x in p.split(" ")) for p in match.group(2).split(";"))
        if any(s >= e or e > len(text) for s, e in pieces):
            return None
        covered = " ".join(text[s:e] for s, e in pieces)
        if match.group(3) not in (covered, one_line(covered)):
            return None
        spans.append((match.group(1), tuple(sorted(pieces))))
    return spans


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` nine times in ten, ``bad`` otherwise: files that are valid but for a field or two."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 0 else good)


@st.composite
def offsets_in(draw, text: str) -> tuple[int, int]:
    start = draw(st.integers(0, len(text) - 1))
    return start, draw(st.integers(start + 1, len(text)))


@st.composite
def brat_files(draw) -> tuple[str, str]:
    text = draw(TEXT.filter(bool))
    lines = []
    for n in range(draw(st.integers(0, 5))):
        if draw(mostly(st.just(False), st.just(True))):
            lines.append(draw(JUNK_LINE))
            continue
        pieces = [
            tuple(map(str, draw(offsets_in(text)))) for _ in range(draw(mostly(st.just(1), st.just(2))))
        ]
        if draw(mostly(st.just(False), st.just(True))):
            pieces[-1] = (draw(mostly(st.just(pieces[-1][0]), NUMBER)), draw(NUMBER))
        covered = " ".join(
            text[int(s) : int(e)] if all(x.isascii() and x.isdigit() and len(x) < 5 for x in (s, e)) else "?"
            for s, e in pieces
        )
        string = draw(mostly(st.just(one_line(covered)), st.one_of(st.text(max_size=8), st.just(covered))))
        label = draw(mostly(LABELS, st.text(max_size=4)))
        lines.append(f"T{n + 1}\t{label} {';'.join(f'{s} {e}' for s, e in pieces)}\t{string}")
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    return text, "".join(line + ending for line in lines)


def check_brat_hostile(sample: tuple[str, str]) -> None:
    text, ann = sample
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "in"
        corpus.mkdir()
        (corpus / "doc.txt").write_text(text, encoding="utf-8", newline="")
        (corpus / "doc.ann").write_bytes(ann.encode("utf-8", errors="surrogatepass"))
        result = read_or_refuse(lambda: read_corpus(corpus, format="brat"))
        if result is None:
            return
        docs, _ = result
        # the text as read (a BOM the offsets do not count dropped)
        expected = reference_brat(docs[0].text, ann)
        if expected is not None:
            assert [(s.label, s.pieces()) for s in docs[0].spans] == expected
        write_corpus(docs, Path(folder) / "out", "brat")
        again, _ = read_corpus(Path(folder) / "out", format="brat")
        same(docs, again)


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.integers(), st.floats(allow_nan=True),
              st.text(max_size=6), st.sampled_from(["5", "0.9"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@st.composite
def jsonl_lines(draw) -> str:
    text = draw(TEXT.filter(bool))
    spans = []
    for _ in range(draw(st.integers(0, 3)) if text else 0):
        start, end = draw(offsets_in(text))
        item: dict = {"start": start, "end": end, "label": draw(mostly(LABELS, JSON_VALUE))}
        if end - start >= 2 and draw(st.booleans()):
            cut = draw(st.integers(start + 1, end - 1))
            item["fragments"] = (
                [[cut, end], [start, cut]] if draw(st.booleans()) else [[start, cut], [cut, end]]
            )
        if draw(st.booleans()):
            pieces = item.get("fragments", [[start, end]])
            item["text"] = " ".join(text[s:e] for s, e in pieces)
        for key in draw(mostly(st.just([]), st.lists(st.sampled_from(["start", "end", "fragments", "text"]),
                                                     min_size=1, unique=True))):
            item[key] = draw(
                st.one_of(
                    st.integers(-2, len(text) + 2),
                    JSON_VALUE,
                    st.lists(st.lists(st.integers(-2, len(text) + 2), min_size=2, max_size=2), max_size=3),
                )
            )
        spans.append(item)
    record: dict = {"id": draw(mostly(st.text(min_size=1, max_size=5), JSON_VALUE)), "text": text,
                    "spans": spans}
    if draw(mostly(st.just(False), st.just(True))):
        record["meta"] = draw(
            st.one_of(
                JSON_VALUE,
                st.fixed_dictionaries(
                    {},
                    optional={"brat_other": JSON_VALUE, "brat_ids": JSON_VALUE, "tokens": JSON_VALUE,
                              "text_missing": JSON_VALUE},
                ),
            )
        )
    line = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0:  # raw JSON numbers Python's json would never write
        line = line.replace(
            "0", draw(st.sampled_from(["Infinity", "NaN", "1e999", "9" * 5000, "-0.0", "0"])), 1
        )
    return line


def reference_jsonl(line: str) -> list[tuple[str, tuple[tuple[int, int], ...]]] | None:
    """(label, sorted pieces) of each span of a plain record whose offsets are JSON integers, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    found = []
    for item in record.get("spans", []) if isinstance(record, dict) else []:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            return None
        pieces = item.get("fragments") or [[item.get("start"), item.get("end")]]
        if not isinstance(pieces, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p) for p in pieces):
            return None
        found.append((item["label"], tuple(sorted(tuple(p) for p in pieces))))
    return found


def check_jsonl_hostile(lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        result = read_or_refuse(lambda: read_corpus(path, format="jsonl"))
        if result is None:
            return
        docs, _ = result
        for doc, line in zip(docs, [line for line in lines if line.strip()], strict=True):
            expected = reference_jsonl(line)
            if expected is not None:
                assert [(s.label, s.pieces()) for s in doc.spans] == expected
            assert all(0 <= s < e <= len(doc.text) for span in doc.spans for s, e in span.pieces())
        write_corpus(docs, Path(folder) / "out.jsonl", "jsonl")
        again, _ = read_corpus(Path(folder) / "out.jsonl", format="jsonl")
        same(docs, again)


@st.composite
def tsv_files(draw) -> tuple[str, str]:
    text = draw(TEXT.filter(bool))
    rows = ["filename\tlabel\tstart_span\tend_span\ttext"]
    for _ in range(draw(st.integers(0, 5))):
        start, end = map(str, draw(offsets_in(text)))
        if draw(mostly(st.just(False), st.just(True))):
            start, end = draw(mostly(st.just(start), NUMBER)), draw(NUMBER)
        fits = all(n.isascii() and n.isdigit() and len(n) < 5 for n in (start, end))
        string = draw(mostly(st.just(text[int(start):int(end)] if fits else "?"), st.text(max_size=6)))
        name = draw(mostly(st.just("doc"), st.sampled_from(["", "missing", "../doc", "doc\u0000", "Doc"])))
        fields = [name, draw(mostly(LABELS, st.text(max_size=3))), start, end, " ".join(string.split())]
        rows.append(draw(mostly(st.just("\t".join(fields)), JUNK_LINE)))
    return text, "\n".join(rows) + "\n"


def check_tsv_hostile(sample: tuple[str, str]) -> None:
    text, tsv = sample
    with tempfile.TemporaryDirectory() as folder:
        texts = Path(folder) / "texts"
        texts.mkdir()
        (texts / "doc.txt").write_text(text, encoding="utf-8", newline="")
        path = Path(folder) / "in.tsv"
        path.write_text(tsv, encoding="utf-8", newline="", errors="surrogatepass")
        result = read_or_refuse(lambda: read_corpus(path, format="tsv", texts_dir=texts))
        if result is None:
            return
        docs, _ = result
        expected = list(dict.fromkeys((f[1], ((int(f[2]), int(f[3])),)) for f in
                                      (row.split("\t") for row in tsv.split("\n")[1:] if row.strip())))
        assert [(s.label, s.pieces()) for d in docs for s in d.spans] == expected
        write_corpus(docs, Path(folder) / "out.tsv", "tsv")
        again, _ = read_corpus(Path(folder) / "out.tsv", format="tsv", texts_dir=texts)
        same(docs, again)


@st.composite
def conll_files(draw) -> str:
    token = mostly(
        st.text(st.characters(categories=("L", "N", "P")), min_size=1, max_size=5),
        st.one_of(st.text(max_size=5), st.sampled_from(["\u00a0", "a\rb", " ", "-DOCSTART-", "x"])),
    )
    tag = mostly(
        st.sampled_from(["O", "O", "B-X", "I-X", "B-Y", "I-Y"]),
        st.one_of(st.sampled_from(["E-X", "S-X", "B-", "I-A,B", "X-Y", "b-x", "O "]), st.text(max_size=4)),
    )
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            lines.append("")
        elif choice == 1:
            lines.append(draw(mostly(st.just("-DOCSTART-\tO"), JUNK_LINE)))
        else:
            lines.append(draw(mostly(st.just("\t"), st.just(" "))).join([draw(token), draw(tag)]))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + "\n"


def check_conll_hostile(content: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.conll"
        path.write_text(content, encoding="utf-8", newline="", errors="surrogatepass")
        result = read_or_refuse(lambda: read_corpus(path, format="conll"))
        if result is None:
            return
        docs, _ = result
        for doc in docs:
            words = {tuple(bounds) for bounds in doc.meta["tokens"]}
            starts, ends = {s for s, _ in words}, {e for _, e in words}
            for span in doc.spans:  # every span runs from a token's start to a token's end
                assert span.start in starts and span.end in ends and span.start < span.end
        written = Path(folder) / "out.conll"
        write_corpus(docs, written, "conll")
        again, _ = read_corpus(written, format="conll")
        assert [(d.text, d.spans) for d in again] == [(d.text, d.spans) for d in docs]


def _record(line: str) -> dict | None:
    """The record of a generated JSONL line, when Python's json (what a datasets user has) reads it."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


hf_rows = st.lists(
    jsonl_lines().map(_record).filter(lambda record: record is not None), min_size=1, max_size=3
)


def check_hf_hostile(rows: list[dict]) -> None:
    from datasets import Dataset

    try:
        dataset = Dataset.from_list(rows)
    except Exception:  # noqa: BLE001 - rows Arrow cannot hold are not an input cardioner can be given
        return
    result = read_or_refuse(lambda: (read_hf(dataset), None))
    if result is None:
        return
    for doc in result[0]:
        assert all(0 <= s < e <= len(doc.text) for span in doc.spans for s, e in span.pieces())


test_brat_hostile, test_brat_hostile_slow = property_tests(brat_files(), check_brat_hostile)
test_jsonl_hostile, test_jsonl_hostile_slow = property_tests(st.lists(jsonl_lines(), min_size=1, max_size=3),
                                                             check_jsonl_hostile)
test_tsv_hostile, test_tsv_hostile_slow = property_tests(tsv_files(), check_tsv_hostile)
test_conll_hostile, test_conll_hostile_slow = property_tests(conll_files(), check_conll_hostile)
test_hf_hostile, test_hf_hostile_slow = property_tests(hf_rows, check_hf_hostile)
