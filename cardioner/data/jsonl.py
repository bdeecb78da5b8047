"""JSON Lines: one document per line, in any of three forms.

- ``{"id", "text", "spans": [{"start", "end", "label"[, "fragments"][, "text"][, "score"]}]}`` (what
  ``write_jsonl`` writes, plus ``"meta"`` when the document has one; ``"score"``, a predicted span's
  confidence in [0, 1], when it has one);
- the CardioNER form ``{"id", "text", "tags": [{"start", "end", "tag"[, "text"]}]}``;
- the Hugging Face form ``{"tokens": [...], "ner_tags": [...]}`` (tag strings, or ints with ``label_names``);
  its text is rebuilt as in CoNLL (tokens joined by spaces), or, when the record also has ``"text"``, the
  tokens are found in it (in order, with only whitespace between them) and the offsets index that text.

A record with only ``"text"`` is an unannotated document (e.g. for predict). Annotations under keys this
reader does not read (a non-empty list in doccano's ``"label"``/``"entities"``, spaCy's ``"ents"``...) raise
CorpusError rather than give a document without its spans (a scalar ``"label"``, a document class, is not
annotation); a ``null`` value counts as absent (Arrow fills missing optional fields with it). A record without
``"id"`` gets ``NAME#n`` (n = its line number). Errors name the file and the record (line) number.

Any form may say which document a record belongs to: ``"document"`` (a string or an integer; read into
``meta["document"]``, written back at the top level). A corpus of sentences gives each sentence's record the
id of its article; consecutive records of one document then lend each other context (``data.context``).

Numbers follow ``cardioner.values``: offsets are JSON integers (``5``, never ``"5"``, ``5.0`` or ``0.9``), no
``Infinity``/``NaN``, nothing beyond 2**63. A span with ``fragments`` may also give ``start``/``end``; they
must then be the first fragment's start and the last one's end. A span's ``"text"``, when given, must be what
its offsets cover (``data.span_errors`` says what to do otherwise). ``"meta"`` is read as untrusted input
(``check_meta``): the keys the writers use are checked — a malformed one is a CorpusError naming the key and
the record — and kept-aside brat lines or brat ids that could not be written as they are dropped and counted,
so that nothing in a record is ever written verbatim into an ``.ann`` file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cardioner.data.brat import valid_other_line
from cardioner.data.common import (
    SCORE_DECIMALS,
    atomic_path,
    check_span_errors,
    head_lines,
    pieces_text,
    progress,
    read_score,
    read_span,
    read_text,
    span_strings,
    split_lines,
)
from cardioner.data.conll import token_problem, tokens_to_document
from cardioner.data.document import (
    BRAT_LINES_DROPPED,
    PER_SPAN_META,
    CorpusError,
    Document,
    ReadReport,
    Span,
    check_flat,
    keep_spans,
)
from cardioner.values import InvalidValue, as_int, loads_json

#: keys of annotation forms this reader does not read (doccano, spaCy, Label Studio): an error, never ignored
UNREAD_ANNOTATION_KEYS = ("label", "labels", "entities", "ents", "annotations")
_FORMS = ("expected 'spans' [{start, end, label}], the CardioNER 'tags' [{start, end, tag}], or 'tokens' + "
          "'ner_tags'")
META_DROPPED = (
    "kept-aside brat lines or brat ids in a record's meta that could not be written as they are (dropped)"
)
_BRAT_ID = re.compile(r"T[0-9]+")


def looks_like_jsonl(lines: list[str]) -> bool:
    """Whether the first non-blank ``lines`` of a file read as JSON Lines (an object first)."""
    return bool(lines) and lines[0].lstrip(" ").startswith("{")


def _present(mapping: dict) -> dict:
    """``mapping`` without its None values: a missing optional field (Arrow fills those with None)."""
    return {key: value for key, value in mapping.items() if value is not None}


def _offset(item: dict, key: str, where: str | Path | None, record: int | None) -> int:
    """An integer offset ``item[key]``, or CorpusError showing
    the bad value (a string, a float, a boolean...)."""
    try:
        return as_int(item.get(key), text=False)
    except InvalidValue as error:
        raise CorpusError(f"span {item!r:.120}: {key!r} {error}", where, record) from None


def _pieces(item: dict, where: str | Path | None, record: int | None) -> tuple[tuple[int, int], ...]:
    """The (start, end) pieces of a span object: its
    ``fragments``, checked against ``start``/``end`` if given."""
    fragments = item.get("fragments")
    if not fragments:
        return ((_offset(item, "start", where, record), _offset(item, "end", where, record)),)
    if not isinstance(fragments, list) or not all(isinstance(f, list) and len(f) == 2 for f in fragments):
        raise CorpusError(f"span {item!r:.120}: 'fragments' must be [[start, end], ...]", where, record)
    pieces = tuple(
        (_offset({"start": f[0]}, "start", where, record), _offset({"end": f[1]}, "end", where, record))
        for f in fragments
    )
    # start/end, if given, are the extent of the fragments, or
    # the first listed fragment's start and the last one's end
    extent, listed = (min(s for s, _ in pieces), max(e for _, e in pieces)), (pieces[0][0], pieces[-1][1])
    for i, key in enumerate(("start", "end")):
        if key in item and _offset(item, key, where, record) not in (extent[i], listed[i]):
            raise CorpusError(
                f"span {item!r:.120}: {key!r} {item[key]} contradicts its fragments (which span "
                f"{extent[0]}-{extent[1]})",
                where,
                record,
            )
    return pieces


def _span_from_item(item: Any, label_key: str, text: str, doc_id: str, where: str | Path | None,
                    record: int | None, report: ReadReport, text_missing: bool = False,
                    span_errors: str = "error") -> Span | None:
    """One span from a ``{"start", "end", label_key[, "fragments"][, "text"]}`` object, checked against
    ``text`` (only for sane offsets when the document text is missing, as for a bare MultiCardioNER TSV); None
    when ``span_errors`` leaves it out."""
    if not isinstance(item, dict):
        raise CorpusError(f"span must be an object, got {item!r:.120}", where, record)
    item = _present(item)
    label = item.get(label_key)
    if not isinstance(label, str) or not label:
        raise CorpusError(f"span {item!r:.120}: {label_key!r} must be a non-empty string", where, record)
    annotated = item.get("text")
    if annotated is not None and not isinstance(annotated, str):
        raise CorpusError(f"span {item!r:.120}: 'text' must be a string", where, record)
    pieces = _pieces(item, where, record)
    score = read_score(item.get("score"), where, record)
    if annotated is None or text_missing:
        span = read_span(label, pieces, None if text_missing else text, doc_id, where, record, report,
                         span_errors)
    else:
        def mismatch(candidate: tuple[tuple[int, int], ...]) -> str:
            start, end = min(s for s, _ in candidate), max(e for _, e in candidate)
            return (f"span {start}-{end} {label}: its \"text\" {annotated!r} != text[{start}:{end}] "
                    f"{pieces_text(text, candidate)!r}")

        span = read_span(label, pieces, text, doc_id, where, record, report, span_errors,
                         lambda candidate: pieces_text(text, candidate) == annotated, mismatch)
    return span if span is None or score is None else replace(span, score=score)


def _tag_names(tags: Sequence[Any], label_names: Sequence[str] | None, where: str | Path | None,
               record: int | None) -> list[str]:
    """Tag strings from strings or ids (ids need ``label_names``)."""
    names = []
    for tag in tags:
        if isinstance(tag, str):
            names.append(tag)
        elif isinstance(tag, int) and not isinstance(tag, bool):
            if label_names is None:
                raise CorpusError(
                    f"ner_tags holds integer {tag!r} but no label_names were given", where, record
                )
            if not 0 <= tag < len(label_names):
                raise CorpusError(f"ner_tags id {tag!r} is outside label_names (0..{len(label_names) - 1})",
                                  where, record)
            names.append(label_names[tag])
        else:
            raise CorpusError(f"ner_tags must hold strings or integers, got {tag!r}", where, record)
    return names


def _tokens_document(record: dict, doc_id: str, word_tags: Any, report: ReadReport,
                     label_names: Sequence[str] | None, where: str | Path | None,
                     record_no: int | None) -> Document:
    """The document of a ``tokens`` + ``ner_tags`` record, on
    its ``text`` when it has one (else tokens joined)."""
    tokens, text = record.get("tokens"), record.get("text")
    if not isinstance(tokens, list) or not isinstance(word_tags, list) or len(tokens) != len(word_tags):
        raise CorpusError(f"'tokens' and 'ner_tags' must be lists of equal length, got {len(tokens or [])} "
                          f"tokens and {word_tags!r:.80}", where, record_no)
    for i, token in enumerate(tokens):
        problem = token_problem(token)
        if problem is not None:
            raise CorpusError(f"token {i + 1} {token!r:.80} {problem}", where, record_no)
    if text is not None and not isinstance(text, str):
        raise CorpusError(f"record has a non-string 'text' {text!r:.80}", where, record_no)
    doc = tokens_to_document(doc_id, [tokens], [_tag_names(word_tags, label_names, where, record_no)], report,
                             where, [[record_no or 0] * len(tokens)], text=text)
    doc.meta["docstart"] = False
    return doc


def _ints(value: Any, size: int | None = None) -> list[int] | None:
    """``value`` as a list of integers (of ``size`` items), or None."""
    if not isinstance(value, list) or (size is not None and len(value) != size):
        return None
    try:
        return [as_int(v, text=False) for v in value]
    except InvalidValue:
        return None


def _ordered_ranges(value: Any, limit: int) -> bool:
    """Whether ``value`` is a list of [start, end] with 0 <=
    start < end <= limit, each after the one before."""
    if not isinstance(value, list):
        return False
    previous = 0
    for item in value:
        pair = _ints(item, 2)
        if pair is None or not previous <= pair[0] < pair[1] <= limit:
            return False
        previous = pair[1]
    return True


def check_meta(meta: Any, text: str, num_spans: int, where: str | Path | None, record_no: int | None,
               report: ReadReport) -> dict:
    """A record's ``meta`` with every key a writer uses
    checked: it comes from a file, and is trusted by nothing.

    CoNLL layout (``tokens``, ``sentences``, ``columns``, ``separator``, ``docstart``), flags and per-span
    lists that are malformed raise CorpusError naming the key; kept-aside brat lines that are not one valid
    A/M/R/E/N/#/* line, and brat ids that are not distinct ``T<n>`` (one per span), are dropped and counted
    (an ``.ann`` gets fresh ids then), so that nothing from a record reaches an ``.ann`` file unchecked.

    Args:
        meta: the record's ``meta`` value.
        text: the document text.
        num_spans: the number of spans the record lists.
        where: the file (for messages).
        record_no: the record (for messages).
        report: where dropped lines and ids are counted.

    Returns:
        The checked meta (a new dict).
    """
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise CorpusError(
            f"'meta' must be an object, got {type(meta).__name__} {meta!r:.80}", where, record_no
        )
    meta = dict(meta)

    def refuse(key: str, expected: str) -> None:
        raise CorpusError(f"meta.{key} must be {expected}, got {meta[key]!r:.80}", where, record_no)

    for key in ("text_missing", "bom_dropped", "docstart"):
        if key in meta and not isinstance(meta[key], bool):
            refuse(key, "true or false")
    if "separator" in meta and meta["separator"] not in ("\t", " "):
        refuse("separator", "a TAB or a space")
    if "scheme" in meta and meta["scheme"] not in ("IOB1", "IOB2", "BIOES"):
        refuse("scheme", "IOB1, IOB2 or BIOES")
    for key in ("path", "source"):
        if key in meta and meta[key] is not None and not isinstance(meta[key], str):
            refuse(key, "a path (text)")
    tokens = meta.get("tokens")
    if "tokens" in meta and not _ordered_ranges(tokens, len(text)):
        refuse("tokens",
               f"a list of [start, end] token offsets in order, inside the text ({len(text)} characters)")
    if "sentences" in meta and (tokens is None or not _ordered_ranges(meta["sentences"], len(tokens))):
        refuse("sentences", "a list of [first, last + 1] token indices in order (with meta.tokens)")
    if "columns" in meta:
        columns, separator = meta["columns"], meta.get("separator", "\t")
        forbidden = re.compile(r"[\t\n\r]" + ("| |^$" if separator == " " else ""))
        if (
            tokens is None
            or not isinstance(columns, list)
            or len(columns) != len(tokens)
            or len({len(row) if isinstance(row, list) else -1 for row in columns}) > 1
            or not all(
                isinstance(row, list) and all(isinstance(c, str) and not forbidden.search(c) for c in row)
                for row in columns
            )
        ):
            refuse("columns", "one list of column strings per token (with meta.tokens), all of one width, "
                   "without TABs or line breaks")
    for key in PER_SPAN_META:
        values = meta.get(key)
        if key in meta and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
            refuse(key, "a list of strings")
    ids = meta.get("brat_ids")
    if ids is not None and (len(ids) != num_spans or len(set(ids)) != len(ids)
                            or not all(_BRAT_ID.fullmatch(i) for i in ids)):
        report.note("skipped", META_DROPPED, f"{where}:{record_no} meta.brat_ids {ids!r:.80}")
        del meta["brat_ids"]
    other = meta.get("brat_other")
    if other is not None:
        items = other if isinstance(other, list) else [other]
        kept = [
            item
            for item in items
            if isinstance(item, list)
            and len(item) == 2
            and _ints(item[:1]) is not None
            and item[0] >= 0
            and valid_other_line(item[1])
        ]
        if len(kept) < len(items):
            bad = next(item for item in items if item not in kept)
            report.note("skipped", META_DROPPED, f"{where}:{record_no} meta.brat_other {bad!r:.80}",
                        n=len(items) - len(kept))
        meta["brat_other"] = kept
    return meta


def _document_key(record: dict, where: str | Path | None, record_no: int | None) -> str | None:
    """The document a record belongs to (its ``"document"``, or its meta's), as text; None when not given.

    Consecutive records of one document lend each other context (``data.context``)."""
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    values = [value for value in (record.get("document"), meta.get("document")) if value is not None]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise CorpusError(f"'document' must be a non-empty string (or an integer), got {value!r:.80}",
                              where, record_no)
    if len({str(value) for value in values}) > 1:
        raise CorpusError(f"'document' {values[0]!r:.40} and meta.document {values[1]!r:.40} differ", where,
                          record_no)
    return str(values[0]) if values else None


def record_to_document(
    record: Any, default_id: str, report: ReadReport, label_names: Sequence[str] | None = None,
    where: str | Path | None = None, record_no: int | None = None, span_errors: str = "error",
) -> Document:
    """Turn one JSON-like record (any of the three forms) into a document; shared by the JSONL and HF readers.

    ``tokens`` + ``ner_tags`` (or ``tags`` holding tag strings) make the tokens form, aligned in ``text`` when
    the record has one; otherwise ``text`` with ``spans`` or CardioNER ``tags``, or ``text`` alone (no spans).

    Args:
        record: the parsed record.
        default_id: the id when the record has none.
        report: where repairs, moves and left-out spans are counted.
        label_names: names for integer ``ner_tags``.
        where: the source (for messages).
        record_no: the record (line) number (for messages).
        span_errors: a span whose ``"text"`` is not what its offsets cover: "error", "skip" or "realign".

    Returns:
        The document.
    """
    if not isinstance(record, dict):
        raise CorpusError(f"record must be a JSON object, got {type(record).__name__} {str(record)[:80]!r}",
                          where, record_no)
    record = _present(record)
    # a list under one of these keys is span annotation we would lose; a scalar (a document class) is not
    unread = [
        key for key in UNREAD_ANNOTATION_KEYS if isinstance(record.get(key), (list, dict)) and record[key]
    ]
    if unread:
        raise CorpusError(f"record has {unread[0]!r}, an annotation form cardioner does not read; {_FORMS} "
                          f"(keys: {sorted(record)})", where, record_no)
    doc_id = record.get("id")
    if doc_id is not None and (
        isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or doc_id == ""
    ):
        raise CorpusError(
            f"'id' must be a non-empty string (or an integer), got {doc_id!r:.80}", where, record_no
        )
    doc_id = default_id if doc_id is None else str(doc_id)
    group = _document_key(record, where, record_no)
    word_tags = record.get("ner_tags", record.get("tags") if "tokens" in record else None)
    if "tokens" in record and (word_tags is not None or "text" not in record):
        if "spans" in record:
            raise CorpusError(
                "record has both 'spans' and 'tokens' + 'ner_tags'; give one of them", where, record_no
            )
        doc = _tokens_document(record, doc_id, word_tags, report, label_names, where, record_no)
        if group is not None:
            doc.meta["document"] = group
        return doc
    if "ner_tags" in record:
        raise CorpusError(f"record has 'ner_tags' but no 'tokens' to put them on (keys: {sorted(record)})",
                          where, record_no)
    text = record.get("text")
    if not isinstance(text, str):
        problem = "lacks 'text'" if "text" not in record else f"has a non-string 'text' {text!r:.80}"
        raise CorpusError(f"record {problem} (keys: {sorted(record)})", where, record_no)
    if "spans" in record:
        items, label_key = record["spans"], "label"
    else:
        items, label_key = record.get("tags", []), "tag"
    if not isinstance(items, list):
        raise CorpusError(f"{'spans' if label_key == 'label' else 'tags'} must be a list, got {items!r:.80}",
                          where, record_no)
    meta = check_meta(record.get("meta"), text, len(items), where, record_no, report)
    if group is not None:
        meta["document"] = group
    text_missing = bool(meta.get("text_missing"))
    read = [
        _span_from_item(item, label_key, text, doc_id, where, record_no, report, text_missing, span_errors)
        for item in items
    ]
    if text_missing:
        meta["span_texts"] = [item.get("text", "") for item in items]
    doc = Document(doc_id, text, [span or Span(0, 0, "") for span in read], meta)
    if any(span is None for span in read):  # left out by span_errors: per-span meta and brat lines follow
        doc, dropped = keep_spans(doc, [i for i, span in enumerate(read) if span is not None])
        if dropped:
            report.note("skipped", BRAT_LINES_DROPPED, f"{doc_id}: {dropped[0]}", n=len(dropped))
    return doc


def read_jsonl(path: str | Path, report: ReadReport | None = None, label_names: Sequence[str] | None = None,
               doc_prefix: str | None = None, flat: bool = False,
               span_errors: str = "error") -> list[Document]:
    """Read a JSONL file.

    Args:
        path: the file.
        report: counts (a new one if None).
        label_names: names for integer ``ner_tags``.
        doc_prefix: the prefix of default ids (default: the file name without extension).
        flat: the task is flat: overlapping spans raise CorpusError naming the file and the record's line.
        span_errors: a span whose ``"text"`` is not what its offsets cover: "error", "skip" or "realign".

    Returns:
        The documents, in file order.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    check_span_errors(span_errors)
    prefix = doc_prefix if doc_prefix is not None else path.stem
    docs = []
    for line_no, line in enumerate(split_lines(read_text(path, strip_bom=True)), start=1):
        if not line.strip():
            report.note("skipped", "blank lines in JSONL", f"{path}:{line_no}")
            continue
        try:
            record = loads_json(line)
        except json.JSONDecodeError as err:
            raise CorpusError(
                f"not valid JSON ({err.msg} at column {err.colno}): {line[:80]!r}", path, line_no
            ) from None
        except InvalidValue as err:
            raise CorpusError(f"not valid data: {err}", path, line_no) from None
        doc = record_to_document(
            record, f"{prefix}#{line_no}", report, label_names, path, line_no, span_errors
        )
        if flat:
            check_flat(doc, path, line_no)
        docs.append(doc)
        report.documents += 1
        report.spans += len(doc.spans)
    return docs


def document_to_record(doc: Document) -> dict:
    """The JSON object written for ``doc``: id, text, spans (with fragments when discontinuous), the
    document it belongs to and meta, if any."""
    spans = []
    for span, string in zip(doc.spans, span_strings(doc), strict=True):
        item: dict = {"start": span.start, "end": span.end, "label": span.label}
        if span.fragments:
            item["fragments"] = [list(f) for f in span.fragments]
        if doc.meta.get("text_missing"):
            item["text"] = string
        if span.score is not None:
            item["score"] = round(span.score, SCORE_DECIMALS)
        spans.append(item)
    record: dict = {"id": doc.id, "text": doc.text, "spans": spans}
    meta = {key: value for key, value in doc.meta.items() if key != "document"}
    if "document" in doc.meta:
        record["document"] = doc.meta["document"]
    if meta:
        record["meta"] = meta
    return record


def write_jsonl(docs: list[Document], path: str | Path) -> None:
    """Write documents as JSONL (atomically), one ``{"id", "text", "spans"[, "meta"]}`` object per line.

    Args:
        docs: the documents.
        path: the output file.
    """
    with atomic_path(path, looks_ours=lambda existing: looks_like_jsonl(head_lines(existing)),
                     what="JSON Lines") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        for doc in progress(docs, desc=f"writing {Path(path).name}"):
            f.write(json.dumps(document_to_record(doc), ensure_ascii=False, default=str) + "\n")
