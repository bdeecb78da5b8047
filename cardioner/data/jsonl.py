"""JSON Lines: one document per line, in any of three forms.

- ``{"id", "text", "spans": [{"start", "end", "label"[, "fragments"][, "text"]}]}`` (what ``write_jsonl`` writes,
  plus ``"meta"`` when the document has one);
- the CardioNER form ``{"id", "text", "tags": [{"start", "end", "tag"[, "text"]}]}``;
- the Hugging Face form ``{"tokens": [...], "ner_tags": [...]}`` (tag strings, or ints with ``label_names``);
  its text is rebuilt as in CoNLL (tokens joined by spaces), or, when the record also has ``"text"``, the tokens
  are found in it (in order, with only whitespace between them) and the offsets index that text.

A record with only ``"text"`` is an unannotated document (e.g. for predict). Annotations under keys this reader
does not read (a non-empty list in doccano's ``"label"``/``"entities"``, spaCy's ``"ents"``...) raise CorpusError
rather than give a document without its spans (a scalar ``"label"``, a document class, is not annotation); a
``null`` value counts as absent (Arrow fills missing optional fields with it). A record without ``"id"`` gets
``NAME#n`` (n = its line number). Errors name the file and the record (line) number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardioner.data.common import (
    atomic_path,
    make_span,
    pieces_text,
    progress,
    read_text,
    span_strings,
    split_lines,
)
from cardioner.data.conll import tokens_to_document
from cardioner.data.document import CorpusError, Document, ReadReport, Span, check_flat

#: keys of annotation forms this reader does not read (doccano, spaCy, Label Studio): an error, never ignored
UNREAD_ANNOTATION_KEYS = ("label", "labels", "entities", "ents", "annotations")
_FORMS = ("expected 'spans' [{start, end, label}], the CardioNER 'tags' [{start, end, tag}], or 'tokens' + "
          "'ner_tags'")


def _present(mapping: dict) -> dict:
    """``mapping`` without its None values: a missing optional field (Arrow fills those with None)."""
    return {key: value for key, value in mapping.items() if value is not None}


def _offset(item: dict, key: str, where: str | Path | None, record: int | None) -> int:
    """An integer offset ``item[key]``, or CorpusError showing the bad value."""
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CorpusError(f"span {item!r}: {key!r} must be an integer offset, got {value!r}", where, record)
    return value


def _span_from_item(item: Any, label_key: str, text: str, doc_id: str, where: str | Path | None,
                    record: int | None, report: ReadReport, text_missing: bool = False) -> Span:
    """One span from a ``{"start", "end", label_key[, "fragments"][, "text"]}`` object, checked against ``text``
    (only for sane offsets when the document text is missing, as for a bare MultiCardioNER TSV)."""
    if not isinstance(item, dict):
        raise CorpusError(f"span must be an object, got {item!r}", where, record)
    item = _present(item)
    label = item.get(label_key)
    if not isinstance(label, str) or not label:
        raise CorpusError(f"span {item!r}: {label_key!r} must be a non-empty string", where, record)
    if item.get("fragments"):
        try:
            pieces = tuple((int(s), int(e)) for s, e in item["fragments"])
        except (TypeError, ValueError):
            raise CorpusError(f"span {item!r}: 'fragments' must be [[start, end], ...]", where, record) from None
    else:
        pieces = ((_offset(item, "start", where, record), _offset(item, "end", where, record)),)
    span = make_span(label, pieces, None if text_missing else text, doc_id, where, record, report)
    if not text_missing and "text" in item and item["text"] != pieces_text(text, pieces):
        raise CorpusError(f"span {span.start}-{span.end} {label}: its \"text\" {item['text']!r} != "
                          f"text[{span.start}:{span.end}] {pieces_text(text, pieces)!r}", where, record)
    return span


def _tag_names(tags: Sequence[Any], label_names: Sequence[str] | None, where: str | Path | None,
               record: int | None) -> list[str]:
    """Tag strings from strings or ids (ids need ``label_names``)."""
    names = []
    for tag in tags:
        if isinstance(tag, str):
            names.append(tag)
        elif isinstance(tag, int) and not isinstance(tag, bool):
            if label_names is None:
                raise CorpusError(f"ner_tags holds integer {tag!r} but no label_names were given", where, record)
            if not 0 <= tag < len(label_names):
                raise CorpusError(f"ner_tags id {tag!r} is outside label_names (0..{len(label_names) - 1})",
                                  where, record)
            names.append(label_names[tag])
        else:
            raise CorpusError(f"ner_tags must hold strings or integers, got {tag!r}", where, record)
    return names


def _tokens_document(record: dict, doc_id: str, word_tags: Any, report: ReadReport,
                     label_names: Sequence[str] | None, where: str | Path | None, record_no: int | None) -> Document:
    """The document of a ``tokens`` + ``ner_tags`` record, on its ``text`` when it has one (else tokens joined)."""
    tokens, text = record.get("tokens"), record.get("text")
    if not isinstance(tokens, list) or not isinstance(word_tags, list) or len(tokens) != len(word_tags):
        raise CorpusError(f"'tokens' and 'ner_tags' must be lists of equal length, got {len(tokens or [])} "
                          f"tokens and {word_tags!r:.80}", where, record_no)
    bad = [t for t in tokens if not isinstance(t, str) or not t]
    if bad:
        raise CorpusError(f"tokens must be non-empty strings, got {bad[0]!r}", where, record_no)
    if text is not None and not isinstance(text, str):
        raise CorpusError(f"record has a non-string 'text' {text!r:.80}", where, record_no)
    doc = tokens_to_document(doc_id, [tokens], [_tag_names(word_tags, label_names, where, record_no)], report, where,
                             [[record_no or 0] * len(tokens)], text=text)
    doc.meta["docstart"] = False
    return doc


def record_to_document(
    record: Any, default_id: str, report: ReadReport, label_names: Sequence[str] | None = None,
    where: str | Path | None = None, record_no: int | None = None,
) -> Document:
    """Turn one JSON-like record (any of the three forms) into a document; shared by the JSONL and HF readers.

    ``tokens`` + ``ner_tags`` (or ``tags`` holding tag strings) make the tokens form, aligned in ``text`` when
    the record has one; otherwise ``text`` with ``spans`` or CardioNER ``tags``, or ``text`` alone (no spans).

    Args:
        record: the parsed record.
        default_id: the id when the record has none.
        report: where repairs are counted.
        label_names: names for integer ``ner_tags``.
        where: the source (for messages).
        record_no: the record (line) number (for messages).

    Returns:
        The document.
    """
    if not isinstance(record, dict):
        raise CorpusError(f"record must be a JSON object, got {type(record).__name__} {str(record)[:80]!r}",
                          where, record_no)
    record = _present(record)
    # a list under one of these keys is span annotation we would lose; a scalar (a document class) is not
    unread = [key for key in UNREAD_ANNOTATION_KEYS if isinstance(record.get(key), (list, dict)) and record[key]]
    if unread:
        raise CorpusError(f"record has {unread[0]!r}, an annotation form cardioner does not read; {_FORMS} "
                          f"(keys: {sorted(record)})", where, record_no)
    doc_id = record.get("id")
    doc_id = default_id if doc_id is None else str(doc_id)
    word_tags = record.get("ner_tags", record.get("tags") if "tokens" in record else None)
    if "tokens" in record and (word_tags is not None or "text" not in record):
        if "spans" in record:
            raise CorpusError("record has both 'spans' and 'tokens' + 'ner_tags'; give one of them", where, record_no)
        return _tokens_document(record, doc_id, word_tags, report, label_names, where, record_no)
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
    meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
    text_missing = bool(meta.get("text_missing"))
    spans = [_span_from_item(item, label_key, text, doc_id, where, record_no, report, text_missing)
             for item in items]
    if text_missing:
        meta["span_texts"] = [item.get("text", "") for item in items]
    return Document(doc_id, text, spans, meta)


def read_jsonl(path: str | Path, report: ReadReport | None = None, label_names: Sequence[str] | None = None,
               doc_prefix: str | None = None, flat: bool = False) -> list[Document]:
    """Read a JSONL file.

    Args:
        path: the file.
        report: counts (a new one if None).
        label_names: names for integer ``ner_tags``.
        doc_prefix: the prefix of default ids (default: the file name without extension).
        flat: the task is flat: overlapping spans raise CorpusError naming the file and the record's line.

    Returns:
        The documents, in file order.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    prefix = doc_prefix if doc_prefix is not None else path.stem
    docs = []
    for line_no, line in enumerate(split_lines(read_text(path, strip_bom=True)), start=1):
        if not line.strip():
            report.note("skipped", "blank lines in JSONL", f"{path}:{line_no}")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"not valid JSON ({err.msg} at column {err.colno}): {line[:80]!r}", path, line_no) from None
        doc = record_to_document(record, f"{prefix}#{line_no}", report, label_names, path, line_no)
        if flat:
            check_flat(doc, path, line_no)
        docs.append(doc)
        report.documents += 1
        report.spans += len(doc.spans)
    return docs


def document_to_record(doc: Document) -> dict:
    """The JSON object written for ``doc``: id, text, spans (with fragments when discontinuous), meta if any."""
    spans = []
    for span, string in zip(doc.spans, span_strings(doc), strict=True):
        item: dict = {"start": span.start, "end": span.end, "label": span.label}
        if span.fragments:
            item["fragments"] = [list(f) for f in span.fragments]
        if doc.meta.get("text_missing"):
            item["text"] = string
        spans.append(item)
    record: dict = {"id": doc.id, "text": doc.text, "spans": spans}
    if doc.meta:
        record["meta"] = doc.meta
    return record


def write_jsonl(docs: list[Document], path: str | Path) -> None:
    """Write documents as JSONL (atomically), one ``{"id", "text", "spans"[, "meta"]}`` object per line.

    Args:
        docs: the documents.
        path: the output file.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        for doc in progress(docs, desc=f"writing {Path(path).name}"):
            f.write(json.dumps(document_to_record(doc), ensure_ascii=False, default=str) + "\n")
