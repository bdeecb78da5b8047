"""CoNLL column files: one token per line, the tag in the last column, blank lines between sentences.

- A blank or whitespace-only line (a lone TAB in WNUT-17
  train) ends a sentence; CRLF and a leading BOM are accepted.
- Columns are separated by TABs when any line has one (the tag column is stripped of spaces), else by runs of
  plain spaces (``" "`` only: a no-break space, U+00A0, inside a number stays in its token). A token that is
  blank (only spaces, no-break spaces...) or holds a line break (a carriage return, U+2028...) is an error: it
  would become part of an entity's text and could not be written back.
- ``-DOCSTART-`` starts a document. A file without any ``-DOCSTART-`` gives one document per sentence.
  Ids are ``NAME#n`` (``NAME`` = the file path relative to the folder read, without extension; n from 1).
- Tags: IOB1, IOB2 and BIOES are accepted and detected per file; all become spans. An ``I-`` that starts an
  entity (after ``O`` or another type) is read by the IOB2 rule as ``B-`` and counted; for an IOB1 file the
  report says that it was normalised to IOB2. An entity type holding a comma, whitespace or a second tag
  prefix (``B-creative-work,B-person``: several labels in one tag) is an error, not a new type.
- Document text = tokens joined by one space, sentences joined by ``"\\n"``. ``doc.meta`` keeps ``tokens``
  (``[start, end]`` per token), ``sentences`` (``[first, last+1]`` token indices), the middle ``columns`` and
  the ``separator``, so that ``write_conll`` gives back the same tokens, columns and (IOB2) tags.
"""

from __future__ import annotations

import re
from pathlib import Path

from cardioner import labels
from cardioner.data.common import atomic_path, check_labels, head_lines, progress, read_text, split_lines
from cardioner.data.document import CorpusError, Document, ReadReport, Span, find_overlap
from cardioner.labels import detect_scheme

DOCSTART = "-DOCSTART-"
_WORD = re.compile(r"\w+|[^\w\s]")
#: what an entity type cannot hold (a comma or whitespace, or a second tag prefix at its start)
_BAD_TYPE = re.compile(r"[,\s]|^[BIES]-")
IOB1_NOTE = "IOB1 tags normalised to IOB2 (entities starting with I-)"
REPAIR_NOTE = "I- after O or another type repaired to B- (IOB2 rule)"
BIOES_REPAIR_NOTE = "BIOES entity without B-/S- start repaired (read as a start)"
TOKEN_EDGE_NOTE = "spans not on token boundaries (written as the tokens they touch)"
# : how format_conll writes a span that does not fit the
# tokens, by its alignment problem: (report kind, reason)
_ALIGNMENT_NOTES = {
    labels.EDGE_INSIDE_WORD: ("repaired", TOKEN_EDGE_NOTE),
    labels.EDGE_OFF_WORDS: ("repaired", TOKEN_EDGE_NOTE),
    labels.DISCONTINUOUS: ("repaired", "discontinuous spans written to CoNLL as their whole extent"),
    labels.NO_WORD: ("skipped", "spans covering no CoNLL token (not written)"),
    labels.CONFLICT: ("skipped", "spans sharing a CoNLL token with another span (not written)"),
    labels.DUPLICATE: ("skipped", "duplicate spans (written once)"),
}


#: characters that break a line somewhere (str.splitlines, brat, editors): never inside a token
LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def token_problem(token: object) -> str | None:
    """Why ``token`` cannot be a CoNLL token (one column of one line, not blank), or None."""
    if not isinstance(token, str) or not token:
        return "is empty or not text"
    if not token.strip():
        return "is blank (only whitespace)"
    found = LINE_BREAKS.search(token)
    if found is not None:
        return f"holds the line break {found.group()!r}"
    return None


def looks_like_conll(lines: list[str]) -> bool:
    """Whether the first non-blank ``lines`` of a file read as CoNLL: two or more columns, a tag in the last.

    Recognised by the tag prefixes alone, so that the reader, not this guess, says what is wrong with a tag.
    """
    rows = [line.split("\t") if "\t" in line else line.split() for line in lines[:50]]
    rows = [row for row in rows if row and row[0] != DOCSTART]
    if not rows or any(len(row) < 2 for row in rows):
        return False
    try:
        tags = [labels.split_tag(row[-1].strip()) for row in rows]
    except ValueError:
        return False
    return all(prefix == labels.OUTSIDE or entity_type for prefix, entity_type in tags)


def check_tag(tag: str, where: str | Path | None = None, line: int | None = None) -> None:
    """CorpusError (file:line) unless ``tag`` is in the tag grammar
    (``labels.split_tag``) with a type a reader accepts: O, or B-/I-/E-/S-
    followed by one entity type (no comma, whitespace or second tag prefix in it).

    Args:
        tag: the tag string.
        where: the file (for the message).
        line: the line or record number (for the message).
    """
    try:
        prefix, label = labels.split_tag(tag)
    except ValueError:
        prefix, label = None, None
    if prefix == labels.OUTSIDE:
        return
    if label is None:
        raise CorpusError(f"unknown tag {tag!r}: expected O or B-/I-/E-/S- followed by a type "
                          "(IOB1, IOB2 or BIOES)", where, line)
    bad = _BAD_TYPE.search(label)
    if bad is not None:
        raise CorpusError(
            f"tag {tag!r}: its entity type {label!r} holds {bad.group()!r} at character {bad.start()}; "
            "one tag per token, one type per tag (several labels joined in one tag are not read)",
            where,
            line,
        )


def tags_to_spans(
    tags: list[str],
    bounds: list[tuple[int, int]],
    report: ReadReport | None = None,
    where: str | Path | None = None,
    lines: list[int] | None = None,
    scheme: str = "IOB2",
) -> list[Span]:
    """Decode word tags (IOB1, IOB2 or BIOES, read leniently by ``labels.tags_to_entities``) into spans.

    Args:
        tags: one tag per word.
        bounds: (start, end) character offsets per word.
        report: where entities starting with ``I-``/``E-`` are
            counted (IOB1 normalised, or IOB2-rule repairs).
        where: the file (for messages).
        lines: line numbers per word (for messages), if known.
        scheme: the file's scheme ("IOB1", "IOB2" or "BIOES"), which only chooses the report's wording.

    Returns:
        The spans, in order.
    """
    for i, tag in enumerate(tags):
        check_tag(tag, where, lines[i] if lines else None)
    entities = labels.tags_to_entities(tags)
    repaired = sum(tags[first][0] in "IE" for first, _, _ in entities)
    if repaired and report is not None:
        note = {"IOB1": IOB1_NOTE, "BIOES": BIOES_REPAIR_NOTE}.get(scheme, REPAIR_NOTE)
        report.note("repaired", note, str(where) if where else None, n=repaired)
    return [Span(bounds[first][0], bounds[last][1], label) for first, last, label in entities]


def _find_tokens(
    text: str, tokens: list[str], where: str | Path | None, lines: list[int] | None
) -> list[tuple[int, int]]:
    """(start, end) of each token in ``text``, in order, with
    only whitespace before each; CorpusError otherwise."""
    bounds: list[tuple[int, int]] = []
    pos = 0
    for i, token in enumerate(tokens):
        start = text.find(token, pos)
        if start < 0 or text[pos:start].strip():
            raise CorpusError(
                f"token {i + 1} {token!r} does not come next in 'text' (at offset {pos}, after whitespace "
                f"only; the text there is {text[pos : pos + 40]!r}): the tokens must appear in the text "
                "in order, with only whitespace between them",
                where,
                lines[i] if lines else None,
            )
        bounds.append((start, start + len(token)))
        pos = start + len(token)
    return bounds


def tokens_to_document(
    doc_id: str, sentences: list[list[str]], tags: list[list[str]], report: ReadReport,
    where: str | Path | None = None, lines: list[list[int]] | None = None, scheme: str | None = None,
    text: str | None = None,
) -> Document:
    """Build a document from tokenised sentences and their tags (shared by CoNLL, JSONL and HF readers).

    Args:
        doc_id: the document id.
        sentences: tokens per sentence.
        tags: tags per sentence, aligned with ``sentences``.
        report: where repairs are counted.
        where: the source (for messages).
        lines: line (or record) numbers per token, for messages.
        scheme: the tag scheme, detected when None.
        text: the text the tokens come from (a JSONL record with ``text`` and ``tokens``); the tokens are
            found in it, in order. When None, the text is the tokens joined by spaces, sentences by newlines.

    Returns:
        The document, with ``tokens`` and ``sentences`` in its meta.
    """
    parts: list[str] = []
    bounds: list[tuple[int, int]] = []
    sentence_bounds: list[list[int]] = []
    pos = 0
    for n, sentence in enumerate(sentences):
        if n:
            parts.append("\n")
            pos += 1
        first = len(bounds)
        for k, token in enumerate(sentence):
            if k:
                parts.append(" ")
                pos += 1
            parts.append(token)
            bounds.append((pos, pos + len(token)))
            pos += len(token)
        sentence_bounds.append([first, len(bounds)])
    flat_tags = [t for sentence_tags in tags for t in sentence_tags]
    flat_lines = [x for sentence_lines in lines for x in sentence_lines] if lines else None
    if text is not None:
        bounds = _find_tokens(
            text, [token for sentence in sentences for token in sentence], where, flat_lines
        )
    for i, tag in enumerate(flat_tags):  # an unknown tag names its line before the scheme is guessed from all
        check_tag(tag, where, flat_lines[i] if flat_lines else None)
    scheme = scheme or detect_scheme(tags)
    spans: list[Span] = []
    for first, last in sentence_bounds:  # an entity never crosses a sentence boundary
        spans.extend(tags_to_spans(flat_tags[first:last], bounds[first:last], report, where,
                                   flat_lines[first:last] if flat_lines else None, scheme))
    meta = {"tokens": [list(b) for b in bounds], "sentences": sentence_bounds}
    return Document(doc_id, "".join(parts) if text is None else text, spans, meta)


def read_conll(
    path: str | Path, report: ReadReport | None = None, doc_prefix: str | None = None
) -> list[Document]:
    """Read one CoNLL file.

    Args:
        path: the file.
        report: counts of repairs (a new one if None).
        doc_prefix: the id prefix (default: the file name without extension).

    Returns:
        The documents, in file order.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    prefix = doc_prefix if doc_prefix is not None else path.stem
    lines = split_lines(read_text(path, strip_bom=True))
    has_docstart = any(line.startswith(DOCSTART) for line in lines)
    separator = "\t" if any("\t" in line.strip(" ") for line in lines if line.strip()) else " "
    num_columns: int | None = None
    columns_line = 0
    # one document: list of sentences; a sentence: list of (token, middle columns, tag, line)
    documents: list[list[list[tuple[str, list[str], str, int]]]] = []
    sentence: list[tuple[str, list[str], str, int]] = []

    def end_sentence() -> None:
        nonlocal sentence
        if sentence:
            if not has_docstart or not documents:
                documents.append([])
            documents[-1].append(sentence)
        sentence = []

    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            end_sentence()
            continue
        if line.split(None, 1)[0] == DOCSTART:  # its columns may be space-separated in a TAB file
            end_sentence()
            documents.append([])
            continue
        fields = line.split("\t") if separator == "\t" else [field for field in line.split(" ") if field]
        if len(fields) < 2:
            raise CorpusError(
                f"expected a token and a tag separated by {separator!r}, got {line!r}", path, line_no
            )
        if num_columns is None:
            num_columns, columns_line = len(fields), line_no
        elif len(fields) != num_columns:
            raise CorpusError(
                f"inconsistent column count: {len(fields)} columns in {line!r}, but {num_columns} "
                f"on line {columns_line}",
                path,
                line_no,
            )
        problem = token_problem(fields[0])
        if problem is not None:
            raise CorpusError(
                f"token {fields[0]!r} {problem}: a token is one column of one line", path, line_no
            )
        sentence.append((fields[0], fields[1:-1], fields[-1].strip(), line_no))
    end_sentence()
    if num_columns is None:
        raise CorpusError("no token lines (only blank lines and -DOCSTART-)", path)

    for doc_sentences in documents:  # unknown prefixes are reported with their line before anything else
        for sent in doc_sentences:
            for row in sent:
                check_tag(row[2], path, row[3])
    scheme = detect_scheme([[row[2] for row in sent] for doc in documents for sent in doc])
    docs = []
    for n, doc_sentences in enumerate(documents, start=1):
        if not doc_sentences:
            report.note("skipped", "-DOCSTART- documents without tokens", f"{path} document {n}")
            continue
        doc = tokens_to_document(
            f"{prefix}#{n}",
            [[row[0] for row in s] for s in doc_sentences],
            [[row[2] for row in s] for s in doc_sentences],
            report,
            path,
            [[row[3] for row in s] for s in doc_sentences],
            scheme,
        )
        doc.meta.update({"docstart": has_docstart, "separator": separator, "scheme": scheme})
        if num_columns > 2:
            doc.meta["columns"] = [row[1] for s in doc_sentences for row in s]
        docs.append(doc)
        report.documents += 1
        report.spans += len(doc.spans)
    return docs


def _regex_tokens(doc: Document) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """Tokens by ``\\w+|[^\\w\\s]`` and sentences by non-empty lines, for documents without token meta."""
    bounds: list[tuple[int, int]] = []
    sentences: list[list[int]] = []
    pos = 0
    for line in doc.text.split("\n"):
        first = len(bounds)
        bounds.extend((pos + m.start(), pos + m.end()) for m in _WORD.finditer(line))
        if len(bounds) > first:
            sentences.append([first, len(bounds)])
        pos += len(line) + 1
    return bounds, sentences


def _check_tokens(doc: Document, bounds: list[tuple[int, int]], sep: str) -> None:
    """Raise CorpusError naming the document and token when a token cannot be one CoNLL column.

    A token holding a line break or the column separator would split its line, and a blank one would read
    back as a sentence break.
    """
    for i, (s, e) in enumerate(bounds):
        token = doc.text[s:e]
        problem = token_problem(token) or (f"holds the column separator {sep!r}" if sep in token else None)
        if problem is not None:
            raise CorpusError(
                f"document {doc.id!r}: token {i + 1} {token!r} (characters {s}-{e}) {problem}, which "
                "a CoNLL line cannot hold"
            )


def format_conll(doc: Document, scheme: str = "IOB2", report: ReadReport | None = None) -> str:
    """The CoNLL lines of one document (with ``-DOCSTART-`` unless it was read from a file without one).

    Args:
        doc: a flat document (overlapping spans raise CorpusError, as do labels and tokens the reader could
            not read back).
        scheme: "IOB2" or "BIOES".
        report: where spans widened to token boundaries (repaired)
            and spans not written (skipped) are counted.

    Returns:
        The text of the document's lines.
    """
    pair = find_overlap(doc.spans)
    if pair is not None:
        a, b = pair
        raise CorpusError(
            f"document {doc.id!r}: CoNLL cannot hold overlapping spans {a.start}-{a.end} {a.label} and"
            f" {b.start}-{b.end} {b.label} (resolve them first: data.document.resolve_overlaps, which"
            " convert's resolve option applies)"
        )
    check_labels(doc, _BAD_TYPE.pattern, "a CoNLL tag")
    if "tokens" in doc.meta:
        bounds = [tuple(b) for b in doc.meta["tokens"]]
        sentences = doc.meta.get("sentences") or [[0, len(bounds)]]
    else:
        bounds, sentences = _regex_tokens(doc)
    sep = doc.meta.get("separator", "\t")
    _check_tokens(doc, bounds, sep)
    alignment = labels.align_spans(bounds, doc.spans)
    tags = labels.entities_to_tags(len(bounds), alignment.entities, scheme)
    if report is not None:
        for span, problem in alignment.problems:
            kind, reason = _ALIGNMENT_NOTES[problem]
            report.note(kind, reason, f"{doc.id} {span.start}-{span.end} {span.label}")
    columns = doc.meta.get("columns")
    if columns is not None and len(columns) != len(bounds):
        columns = None
    out: list[str] = []
    if doc.meta.get("docstart", True):
        width = len(columns[0]) if columns else 0
        out.append(sep.join([DOCSTART] + ["-X-"] * width + ["O"]) + "\n\n")
    for first, last in sentences:
        for i in range(first, last):
            s, e = bounds[i]
            middle = list(columns[i]) if columns else []
            out.append(sep.join([doc.text[s:e], *middle, tags[i]]) + "\n")
        out.append("\n")
    return "".join(out)


def write_conll(
    docs: list[Document], path: str | Path, scheme: str = "IOB2", report: ReadReport | None = None
) -> None:
    """Write documents as one CoNLL file (atomically).

    Args:
        docs: flat documents.
        path: the output file.
        scheme: "IOB2" (default) or "BIOES".
        report: where spans widened to token boundaries (repaired)
            and spans not written (skipped) are counted.
    """
    with atomic_path(path, looks_ours=lambda existing: looks_like_conll(head_lines(existing)),
                     what="CoNLL") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        for doc in progress(docs, desc=f"writing {Path(path).name}"):
            try:
                f.write(format_conll(doc, scheme, report))
            except CorpusError as err:
                raise CorpusError(err.problem, path) from None
