"""Documents -> words -> subword windows with labels, and window predictions -> word tags -> spans.

Words (docs/architecture.md, "Words"): a document is tokenised once, without special tokens and without
truncation; every piece gets its class from ``modeling.build_token_classes`` and ``modeling.word_start_mask``
decides which pieces start a word — the same function the model runs in ``forward`` on a window's ids, so the
encoder and the model agree position for position. A word's character span runs from its first piece's start
to its last piece's end (whitespace trimmed). Characters that no piece covers are in no word; so are pieces
that are not in a word (special tokens written in the text, a bare ``▁``).

Windows: the pieces are grouped into *units* — a word with the non-word pieces just before it — and units are
packed greedily into windows of at most ``max_length`` subwords, special tokens included. Consecutive windows
overlap by whole units, at most ``stride`` subwords. A word longer than a window cannot be kept whole: it is
cut into window-sized pieces, each of which becomes a word of its own (counted in
``EncodingReport.split_words``). The model sees exactly that, since a window's first piece always starts a
word; nothing is ever truncated.

Context (``context`` > 0, ``data.context``): windows no longer overlap. Each holds its *own* words — one
line of the text (a sentence, in CoNLL text), or as many of its units as fit in ``max_length - 2 * context``
subwords when the line is longer — and on each side up to ``context`` subwords of the text around them, whole
units: the rest of the document, then the neighbouring documents of the same group (consecutive documents
whose ``meta["document"]`` is the same, e.g. the sentences of one article read from JSONL). Context pieces
carry no label (-100), belong to no word (``word_ids`` -1) and are marked in the window's ``context_mask``, so
the model neither trains on them nor decodes them (modeling.py, ``context_mask``): every word is labelled and
predicted exactly once, in the window whose own words hold it, with at least ``context`` subwords of its
document on each side (fewer at the ends of its group). A line break where a window's own words end is not a
cut (below): no entity is joined across it, as no entity crosses a sentence.

Labels (docs/architecture.md, "Channels"): per channel, spans -> word tags (``labels.align_spans``); the
first piece of a word carries its tag id, other pieces and special tokens -100 (with ``label_all_subwords``,
continuation pieces carry ``I-`` of the word's type, ``O`` for ``O``). Labels have one shape for every label
set: a row of one tag id per channel at each position, (seq_len, num_channels); a flat label set is one
channel. Word tags, window predictions and merged predictions are rows of the same kind.

Decoding: per-window word tag ids -> one tag per document word, each word taken from the window where it sits
farthest from a window edge -> spans with character offsets. A word's distance from a window's edges is
counted in subwords from the window's first word and to its last word (the words at a cut are at distance 0,
whatever non-word pieces such as newlines open the window); a window edge that is the document's start or
end does not count as an edge, since no context is cut there; ties go to the earlier window. Where the word
taken is at a cut (no window holds it inside: ``stride=0``, or windows sharing one word), its tag is the
window's re-tagged one (``I-X -> B-X`` at a window's first word; under BIOES also ``I-X -> E-X``,
``B-X -> S-X`` at its last), so the merge undoes that (``joins_across_cut``): two consecutive words of one
type are one entity when each side of the cut between them either continues it or is a word taken at that cut;
e.g. BIO ``B-X``/``I-X`` then a window's first word ``B-X`` -> ``I-X``; BIOES a window's last word ``E-X``
then ``I-X`` -> ``I-X``. Only two entities of one type that meet exactly at such a cut, with no word between
them, come back joined: the window labels cannot tell them from one entity cut in two.

Confidences: each word's span-confidence pieces (the model's ``word_confidences``: log-probabilities of
opening, continuing and closing its decoded entity) are taken from the same window as its tags, and a span's
score is ``modeling.span_confidence`` over its words (by the model's rule, ``span_score``: for a CRF the
probability of exactly this entity, for a softmax or sigmoid head the geometric mean of the same pieces). An
entity joined across a window cut combines pieces from the two windows, each the posterior of its window; an
entity that the merge makes out of two windows that disagree about its edges (one window's path runs on where
the other takes the word) gets the piece the first window's path rules out, a score near 0 for a CRF: neither
window predicted it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from cardioner import processes
from cardioner.data.document import Document, Span
from cardioner.labels import (
    CONFLICT,
    DUPLICATE,
    OUTSIDE,
    LabelSet,
    align_spans,
    check_scheme,
    entities_to_tags,
    split_tag,
    tags_to_entities,
)
from cardioner.modeling import build_token_classes, span_confidence, word_start_mask
from cardioner.values import counted

logger = logging.getLogger("cardioner")

IGNORE_INDEX = -100
NO_WORD = -1
UNKNOWN_TYPE = "type not in the label set (skipped)"
_MAX_SENSIBLE_LENGTH = 1_000_000  # tokenizers without a limit report model_max_length = 1e30


@dataclass
class EncodingReport:
    """What encoding did to the spans: how many round-trip exactly, which do not and why, words cut."""

    documents: int = 0
    spans: int = 0
    words: int = 0
    windows: int = 0
    split_words: int = 0  # words longer than a window, cut into window-sized words
    problems: Counter = field(default_factory=Counter)  # reason -> number of spans
    examples: dict = field(default_factory=dict)  # reason -> first few examples (strings)

    @property
    def inexact(self) -> int:
        """Spans that do not come back exactly from spans -> tags
        -> spans (duplicates come back once: exact)."""
        return sum(n for reason, n in self.problems.items() if reason != DUPLICATE)

    @property
    def exact(self) -> int:
        return self.spans - self.inexact

    def note(self, reason: str, example: str, n: int = 1) -> None:
        self.problems[reason] += n
        bucket = self.examples.setdefault(reason, [])
        if len(bucket) < 3:
            bucket.append(example)

    def merge(self, other: EncodingReport) -> EncodingReport:
        self.documents += other.documents
        self.spans += other.spans
        self.words += other.words
        self.windows += other.windows
        self.split_words += other.split_words
        self.problems.update(other.problems)
        for reason, items in other.examples.items():
            bucket = self.examples.setdefault(reason, [])
            bucket.extend(items[: max(0, 3 - len(bucket))])
        return self

    def summary(self) -> str:
        share = 100.0 * self.exact / self.spans if self.spans else 100.0
        lines = [
            f"encoded {counted(self.documents, 'document')}, {counted(self.words, 'word')}, "
            f"{counted(self.windows, 'window')}; {self.exact}/{counted(self.spans, 'span')} exact "
            f"({share:.2f}%)"
        ]
        for reason, count in sorted(self.problems.items()):
            example = self.examples.get(reason)
            lines.append(f"  {count} {reason}" + (f" (e.g. {example[0]})" if example else ""))
        if self.split_words:
            example = self.examples.get("split word")
            lines.append(
                f"  {counted(self.split_words, 'word')} longer than a window cut into pieces"
                + (f" (e.g. {example[0]})" if example else "")
            )
        return "\n".join(lines)


@dataclass
class EncodedDocument:
    """One document's words, gold word tags and windows.

    ``windows`` are dicts ready for ``datasets.Dataset.from_list`` and ``collate``: ``doc_id``, ``window``
    (index in the document), ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer uses
    them), ``labels``, ``word_ids`` (document word index per position; -1 for special and non-word pieces).
    """

    doc_id: str
    word_offsets: list[tuple[int, int]]  # (start, end) characters of each word
    word_labels: list[list[int]]  # gold tag id per word and channel: (num_words, num_channels)
    windows: list[dict]
    window_words: list[tuple[int, int]]  # [first, end) document words of each window
    # first piece of each window's first word / end piece of its last word; -inf / +inf at the document's ends
    window_edges: list[tuple[float, float]]
    word_pieces: list[tuple[int, int]]  # [first, end) document pieces of each word
    report: EncodingReport

    def window_gold(self) -> list[list[list[int]]]:
        """The document's gold tag ids per window, in word order (what a perfect model would predict).

        Unlike the windows' training ``labels``, these are not re-tagged at window edges.
        """
        return [self.word_labels[first:end] for first, end in self.window_words]


@dataclass
class EncodedCorpus:
    """Documents encoded once, to train on and to evaluate again and again: each with its windows."""

    name: str  # what the corpus is to the run ("train", "dev", "test"), for logs and progress bars
    documents: list[Document]
    encoded: list[EncodedDocument]  # one per document, in the same order
    report: EncodingReport

    @property
    def windows(self) -> list[dict]:
        """Every window of every document, in document order."""
        return [window for doc in self.encoded for window in doc.windows]


@dataclass
class _Pieces:
    """A document's subwords as the encoder cuts them."""

    ids: list[int]
    offsets: list[tuple[int, int]]  # (start, end) characters of each piece
    in_word: list[bool]
    word_start: list[bool]
    units: list[tuple[int, int]]  # [start, end) pieces: a word with the non-word pieces before it


class Encoder:
    """Cut documents into labelled subword windows and decode window predictions back into spans.

    Args:
        tokenizer: a fast Hugging Face tokenizer (the backbone's).
        labels: a LabelSet (flat or multi-label), or the entity types of a flat task.
        max_length: window size in subwords, special tokens included; None: ``tokenizer.model_max_length``.
        stride: most subwords two consecutive windows share (whole words); None: a quarter of a window.
        scheme: "BIO" or "BIOES"; None: the label set's (BIO for a list of types). Must match a LabelSet.
        label_all_subwords: give continuation subwords a label (``I-`` of their word's type) instead of -100.
        context: subwords of unlabelled context on each side of a window's own words (module docstring,
            "Context"); 0: none, consecutive windows overlap by ``stride`` instead.
    """

    def __init__(
        self,
        tokenizer,
        labels: LabelSet | Iterable[str],
        max_length: int | None = None,
        stride: int | None = None,
        scheme: str | None = None,
        label_all_subwords: bool = False,
        context: int = 0,
    ):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"cardioner needs a fast tokenizer (offsets); got {type(tokenizer).__name__}")
        if isinstance(labels, str):
            raise ValueError(
                f"labels must be a LabelSet or a list of entity types, not the string {labels!r}"
            )
        if not isinstance(labels, LabelSet):
            labels = LabelSet.flat(labels, scheme or "BIO")
        elif scheme is not None and check_scheme(scheme) != labels.scheme:
            raise ValueError(f"scheme {scheme!r} differs from the label set's scheme {labels.scheme!r}")
        self.tokenizer = tokenizer
        self.labels = labels
        self.scheme = labels.scheme
        self.label_all_subwords = label_all_subwords
        self.token_classes = build_token_classes(tokenizer)  # shape: (vocab_size,)
        self._backend = _plain_backend(tokenizer)
        self.prefix_ids, self.suffix_ids, self.type_ids = _special_tokens(self._backend)
        self.use_token_type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

        if max_length is None:
            max_length = int(getattr(tokenizer, "model_max_length", 0) or 0)
            if not 0 < max_length < _MAX_SENSIBLE_LENGTH:
                raise ValueError(
                    f"the tokenizer sets no usable model_max_length ({max_length}); pass max_length"
                )
        self.max_length = int(max_length)
        self.capacity = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.capacity < 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for text besides the"
                f" {len(self.prefix_ids) + len(self.suffix_ids)} special tokens"
            )
        self.stride = self.capacity // 4 if stride is None else int(stride)
        if not 0 <= self.stride < self.capacity:
            raise ValueError(
                f"stride={stride} must be >= 0 and < the {self.capacity} text subwords of a window"
            )
        self.context = int(context)
        if not 0 <= 2 * self.context < self.capacity:
            raise ValueError(
                f"context={context} must be >= 0 and leave room for a window's own words: twice the"
                f" context must be less than the {self.capacity} text subwords of a window"
                f" (max_length {self.max_length})"
            )
        # Tag id -> tag id of a continuation subword (I- of the same type; O stays O), per channel.
        # Tag id -> tag id at a window's first word (I-X -> B-X, E-X -> S-X) and last word (BIOES only).
        self._window_start_ids = [
            [
                channel.tag_id(_window_edge_tag(channel.typed_tag(i), True, self.scheme))
                for i in range(len(channel.tags))
            ]
            for channel in labels.channels
        ]
        self._window_end_ids = [
            [
                channel.tag_id(_window_edge_tag(channel.typed_tag(i), False, self.scheme))
                for i in range(len(channel.tags))
            ]
            for channel in labels.channels
        ]
        self._continuation_ids = [
            [channel.tag_id(_continuation_tag(channel.typed_tag(i))) for i in range(len(channel.tags))]
            for channel in labels.channels
        ]

    # -- encoding -------------------------------------------------------------------------------------

    def encode(self, documents: Iterable[Document]) -> tuple[list[EncodedDocument], EncodingReport]:
        """Encode documents (tokenised in one batch); returns them and the aggregated report.

        With ``context``, a document takes context from its neighbours in ``documents`` that belong to the
        same group (consecutive, same ``meta["document"]``): pass a group whole.
        """
        documents = list(documents)
        encodings = self._backend.encode_batch([doc.text for doc in documents], add_special_tokens=False)
        reports = [EncodingReport(documents=1, spans=len(doc.spans)) for doc in documents]
        pieces = [self._pieces(doc, encoding.ids, encoding.offsets, report)
                  for doc, encoding, report in zip(documents, encodings, reports, strict=True)]
        groups = [doc.meta.get("document") for doc in documents]
        report = EncodingReport()
        encoded = []
        for i, doc in enumerate(documents):
            before, after = [], []  # the group's other documents, nearest first
            if self.context and groups[i] is not None:
                j = i
                while j > 0 and groups[j - 1] == groups[i]:
                    j -= 1
                    before.append(pieces[j])
                j = i
                while j + 1 < len(documents) and groups[j + 1] == groups[i]:
                    j += 1
                    after.append(pieces[j])
            one = self._encode(doc, pieces[i], reports[i], before, after)
            report.merge(one.report)
            encoded.append(one)
        return encoded, report

    def encode_corpus(self, documents: Sequence[Document], name: str) -> EncodedCorpus:
        """Encode a corpus once (with a progress bar) and log what encoding did to its spans."""
        documents = list(documents)
        encoded, report = self.encode(tqdm(documents, desc=f"encoding {name}", leave=False,
                                           disable=not processes.is_main()))
        logger.info("%s: %s", name, report.summary().replace("\n", ";"))
        return EncodedCorpus(name, documents, encoded, report)

    def encode_document(self, document: Document) -> EncodedDocument:
        """Encode one document (alone: no context from other documents): words, gold word tags, windows and
        the report of inexact spans."""
        encoding = self._backend.encode(document.text, add_special_tokens=False)
        report = EncodingReport(documents=1, spans=len(document.spans))
        return self._encode(document, self._pieces(document, encoding.ids, encoding.offsets, report), report)

    def _pieces(self, doc: Document, ids: list[int], offsets: list[tuple[int, int]],
                report: EncodingReport) -> _Pieces:
        """A document's pieces, which of them are in and start words, and its units (long ones cut)."""
        in_word, word_start = self._segment(ids)
        units = _units(in_word, word_start)
        units = self._split_long_units(doc, units, in_word, word_start, offsets, report)
        return _Pieces(ids, offsets, in_word, word_start, units)

    def _encode(self, doc: Document, pieces: _Pieces, report: EncodingReport,
                before: Sequence[_Pieces] = (), after: Sequence[_Pieces] = ()) -> EncodedDocument:
        ids, units = pieces.ids, pieces.units
        word_pieces = _words(pieces.in_word, pieces.word_start)
        word_offsets = [_trim(doc.text, pieces.offsets[first][0], pieces.offsets[end - 1][1])
                        for first, end in word_pieces]
        report.words = len(word_offsets)
        piece_word = [NO_WORD] * len(ids)
        for w, (first, end) in enumerate(word_pieces):
            piece_word[first:end] = [w] * (end - first)

        word_labels = self._word_labels(doc, word_offsets, report)
        ends = {0, len(units)}  # unit boundaries that are no cut: the document's ends
        if self.context:
            breaks = _line_breaks(doc.text, pieces)
            ranges = _pack_own(units, self.capacity - 2 * self.context, breaks)
            ends.update(breaks)  # and, with context, line breaks: no entity is joined again across them
        else:
            ranges = _pack(units, self.capacity, self.stride)
        windows, window_words, window_edges = [], [], []
        for u0, u1 in ranges:
            start, end = (units[u0][0], units[u1 - 1][1]) if u1 > u0 else (0, 0)
            left_context, right_context = [], []
            if self.context:
                budget = min(self.context, (self.capacity - (end - start)) // 2)  # a long word takes some
                left_context = _context([(ids, units[:u0])] + [(p.ids, p.units) for p in before], budget, -1)
                right_context = _context([(ids, units[u1:])] + [(p.ids, p.units) for p in after], budget, 1)
            windows.append(self._window(doc.id, len(windows), ids, piece_word, word_pieces, word_labels,
                                        start, end, left_context, right_context))
            words_here = [w for w in piece_word[start:end] if w != NO_WORD]
            window_words.append((words_here[0], words_here[-1] + 1) if words_here else (0, 0))
            # Distances are counted from the window's first word and to its last one (the words at a cut),
            # not from its first piece: a window may open with non-word pieces (newlines, a bare "▁").
            left, right = ((word_pieces[words_here[0]][0], word_pieces[words_here[-1]][1]) if words_here
                           else (start, end))
            window_edges.append((float("-inf") if u0 in ends else left,
                                 float("inf") if u1 in ends else right))
        report.windows = len(windows)
        return EncodedDocument(
            doc.id, word_offsets, word_labels, windows, window_words, window_edges, word_pieces, report
        )

    def _segment(self, ids: list[int]) -> tuple[list[bool], list[bool]]:
        """(in_word, word_start) per piece, by the model's own rule."""
        if not ids:
            return [], []
        ids_tensor = torch.tensor(ids, dtype=torch.long).clamp_(0, len(self.token_classes) - 1)
        classes = self.token_classes[ids_tensor].unsqueeze(0)  # shape: (1, num_pieces)
        in_word, word_start = word_start_mask(classes)  # shape: (1, num_pieces) each
        return in_word[0].tolist(), word_start[0].tolist()

    def _split_long_units(
        self,
        doc: Document,
        units: list[tuple[int, int]],
        in_word: list[bool],
        word_start: list[bool],
        offsets: list[tuple[int, int]],
        report: EncodingReport,
    ) -> list[tuple[int, int]]:
        """Cut units longer than a window into window-sized units; a cut inside a word starts a new word."""
        result = []
        for start, end in units:
            if end - start <= self.capacity:
                result.append((start, end))
                continue
            cuts = list(range(start, end, self.capacity))
            if any(in_word[c] and not word_start[c] for c in cuts):
                report.split_words += 1
                first = next(i for i in range(start, end) if word_start[i])
                if len(report.examples.setdefault("split word", [])) < 3:
                    report.examples["split word"].append(
                        f"{doc.id}:{offsets[first][0]}"
                        f" {doc.text[offsets[first][0] : offsets[end - 1][1]][:60]!r} ({end - first}"
                        " subwords)"
                    )
            for c in cuts:
                if in_word[c]:
                    word_start[c] = True
            result.extend((c, min(c + self.capacity, end)) for c in cuts)
        return result

    def _word_labels(
        self, doc: Document, word_offsets: list[tuple[int, int]], report: EncodingReport
    ) -> list[list[int]]:
        """Gold tag id per word and channel; spans that will not come back exactly go into ``report``."""
        by_channel: list[list[Span]] = [[] for _ in self.labels.channels]
        types = set(self.labels.types)
        for span in doc.spans:
            if span.label not in types:
                report.note(UNKNOWN_TYPE, _describe(doc, span))
                continue
            by_channel[self.labels.channel_of(span.label)].append(span)
        columns = []
        for channel, spans in zip(self.labels.channels, by_channel, strict=True):
            alignment = align_spans(word_offsets, spans)
            for span, reason in alignment.problems:
                example = _describe(doc, span)
                if reason == CONFLICT:
                    example += " overlaps another span"
                report.note(reason, example)
            tags = entities_to_tags(len(word_offsets), alignment.entities, self.scheme)
            columns.append([channel.tag_id(tag) for tag in tags])
        return [list(row) for row in zip(*columns, strict=True)]  # shape: (num_words, num_channels)

    def _window(
        self,
        doc_id: str,
        index: int,
        ids: list[int],
        piece_word: list[int],
        word_pieces: list[tuple[int, int]],
        word_labels: list[list[int]],
        start: int,
        end: int,
        left_context: list[int] = (),
        right_context: list[int] = (),
    ) -> dict:
        """One window over pieces [start, end): ids with special tokens, labels, word_ids; with the ids of
        ``left_context`` and ``right_context`` around them (no labels, no words; ``context_mask`` 1)."""
        ignore = [IGNORE_INDEX] * self.labels.num_channels
        labels, word_ids, starts = [], [], []
        for p in range(start, end):
            w = piece_word[p]
            word_ids.append(w)
            if w == NO_WORD:
                labels.append(ignore)
            elif p == word_pieces[w][0]:
                starts.append(len(labels))
                labels.append(word_labels[w])
            elif self.label_all_subwords:
                labels.append(self._continuation(word_labels[w]))
            else:
                labels.append(ignore)
        if starts:
            # A window may cut an entity: its first word is then the entity's first word *in this window*
            # (I-X -> B-X; BIOES E-X -> S-X), and under BIOES its last word the entity's last (I-X -> E-X,
            # B-X -> S-X). Otherwise the CRF would see start -> I-X, a transition the scheme forbids.
            labels[starts[0]] = self._retag(labels[starts[0]], self._window_start_ids)
            if self.scheme == "BIOES":
                labels[starts[-1]] = self._retag(labels[starts[-1]], self._window_end_ids)
        before = len(self.prefix_ids) + len(left_context)  # positions before the own pieces
        after = len(right_context) + len(self.suffix_ids)
        text = [*left_context, *ids[start:end], *right_context]
        window = {
            "doc_id": doc_id,
            "window": index,
            "input_ids": self.prefix_ids + text + self.suffix_ids,
            "attention_mask": [1] * (before + end - start + after),
        }
        if self.use_token_type_ids:
            prefix_type, text_type, suffix_type = self.type_ids
            window["token_type_ids"] = prefix_type + [text_type] * len(text) + suffix_type
        window["labels"] = [ignore] * before + labels + [ignore] * after
        window["word_ids"] = [NO_WORD] * before + word_ids + [NO_WORD] * after
        if self.context:
            window["context_mask"] = ([0] * len(self.prefix_ids) + [1] * len(left_context)
                                      + [0] * (end - start) + [1] * len(right_context)
                                      + [0] * len(self.suffix_ids))
        return window

    @staticmethod
    def _retag(label: list[int], tables: list[list[int]]) -> list[int]:
        """Each channel's tag id through that channel's table."""
        return [table[i] for table, i in zip(tables, label, strict=True)]

    def _continuation(self, label: list[int]) -> list[int]:
        return self._retag(label, self._continuation_ids)

    # -- decoding -------------------------------------------------------------------------------------

    def merge_predictions(self, encoded: EncodedDocument, predictions: Sequence) -> list[list[int]]:
        """One row of tag ids per document word from per-window word predictions.

        Args:
            encoded: the document as ``encode`` returned it.
            predictions: one entry per window: a row of tag ids (one per channel) for each of the window's
                words in order, shape (num_words_in_window, num_channels).

        Returns:
            a row of tag ids per document word, (num_words, num_channels), each from the window where the word
            sits farthest from an edge (ties: the earlier window); at a cut, entities the window re-tagging
            split are joined again (module docstring, "Decoding").
        """
        merged, source = self._pick_central(encoded, predictions)
        # Words taken at a cut: the first word of a window that does not start the document, the last word of
        # one that does not end it.
        start_cuts = {w for w in range(len(merged)) if w == encoded.window_words[source[w]][0]
                      and encoded.window_edges[source[w]][0] != float("-inf")}
        end_cuts = {w for w in range(len(merged)) if w == encoded.window_words[source[w]][1] - 1
                    and encoded.window_edges[source[w]][1] != float("inf")}
        return self._rejoin_cut_entities([[int(t) for t in row] for row in merged], start_cuts, end_cuts)

    def merge_scores(self, encoded: EncodedDocument, scores: Sequence) -> list:
        """Per-window word scores (any values per word, e.g. the head's raw scores per channel and tag) merged
        as ``merge_predictions`` merges tag ids: each word from its most central window, never re-tagged."""
        return self._pick_central(encoded, scores)[0]

    def _pick_central(self, encoded: EncodedDocument, per_window: Sequence) -> tuple[list, list[int]]:
        """(the value of each document word taken from the window where it sits farthest from an edge, that
        window's index); ``per_window`` holds one value per word of each window."""
        if len(per_window) != len(encoded.windows):
            raise ValueError(
                f"{counted(len(per_window), 'window prediction')} for "
                f"{counted(len(encoded.windows), 'window')} of {encoded.doc_id!r}"
            )
        merged: list = [None] * len(encoded.word_offsets)
        best = [float("-inf")] * len(encoded.word_offsets)
        source = [0] * len(encoded.word_offsets)  # the window each word is taken from
        for k, (window_values, (first, end)) in enumerate(zip(per_window, encoded.window_words, strict=True)):
            window_values = _as_list(window_values)
            if len(window_values) != end - first:
                raise ValueError(f"window {k} of {encoded.doc_id!r} has {counted(end - first, 'word')}; "
                                 f"got {counted(len(window_values), 'prediction')}")
            left, right = encoded.window_edges[k]
            for w, value in zip(range(first, end), window_values, strict=True):
                piece_first, piece_end = encoded.word_pieces[w]
                distance = min(piece_first - left, right - piece_end)
                if distance > best[w]:
                    best[w], merged[w], source[w] = distance, value, k
        missing = [w for w, value in enumerate(merged) if value is None]
        assert not missing, f"words in no window: {missing[:5]}"
        return merged, source

    def _rejoin_cut_entities(self, merged: list[list[int]], start_cuts: set[int],
                             end_cuts: set[int]) -> list[list[int]]:
        """Undo the window re-tagging (``_window``) at the words taken at a cut, per channel (see
        ``joins_across_cut``): a row of tag ids per word in, a row of tag ids per word out."""
        boundaries = sorted(
            {w - 1 for w in start_cuts if w > 0} | {w for w in end_cuts if w + 1 < len(merged)}
        )
        for c, channel in enumerate(self.labels.channels):
            # next to a cut
            tags = {w: channel.typed_tag(merged[w][c]) for p in boundaries for w in (p, p + 1)}
            joins = {
                p for p in boundaries
                if joins_across_cut(tags[p], tags[p + 1], p in end_cuts, p + 1 in start_cuts)
            }
            changed = {w: (w - 1 in joins, w in joins) for p in joins for w in (p, p + 1)}
            for w, (join_left, join_right) in changed.items():
                merged[w][c] = channel.tag_id(rejoined_tag(tags[w], join_left, join_right))
        return merged

    def decode_document(self, encoded: EncodedDocument, predictions: Sequence,
                        confidences: Sequence | None = None, span_score: str = "product") -> list[Span]:
        """Spans (character offsets) from per-window word predictions (see ``merge_predictions``), scored when
        ``confidences`` gives each window's (words, channels, 3) span-confidence pieces (module docstring) by
        the model's ``span_score`` rule (``modeling.span_confidence``)."""
        merged = self.merge_predictions(encoded, predictions)
        pieces = None if confidences is None else self.merge_scores(encoded, confidences)
        return self.word_labels_to_spans(encoded.word_offsets, merged, pieces, span_score)

    def decode_window(self, encoded: EncodedDocument, window_index: int, prediction: Sequence) -> list[Span]:
        """Spans from one window's word predictions alone (the words of that window only)."""
        first, end = encoded.window_words[window_index]
        prediction = _as_list(prediction)
        if len(prediction) != end - first:
            raise ValueError(
                f"window {window_index} has {counted(end - first, 'word')}; got "
                f"{counted(len(prediction), 'prediction')}"
            )
        return self.word_labels_to_spans(encoded.word_offsets[first:end], prediction)

    def word_labels_to_spans(self, word_offsets: Sequence[tuple[int, int]],
                             word_labels: Sequence[Sequence[int]],
                             word_confidences: Sequence | None = None,
                             span_score: str = "product") -> list[Span]:
        """Spans from a row of tag ids per word (one per channel), decoded channel by channel; scored when
        ``word_confidences`` gives each word's (channels, 3) span-confidence pieces (by ``span_score``)."""
        spans: list[Span] = []
        for c in range(self.labels.num_channels):
            pieces = None if word_confidences is None else [_as_list(row)[c] for row in word_confidences]
            tags = [row[c] for row in word_labels]
            spans.extend(self.channel_spans(word_offsets, tags, c, pieces, span_score))
        return sorted(spans, key=lambda s: (s.start, s.end, s.label))

    def channel_spans(self, word_offsets: Sequence[tuple[int, int]], tag_ids: Sequence[int],
                      channel_index: int = 0, confidences: Sequence | None = None,
                      span_score: str = "product") -> list[Span]:
        """Spans of one channel from its tag id per word (scored with its words' (3,) confidence pieces)."""
        channel = self.labels.channels[channel_index]
        tags = [channel.typed_tag(int(tag_id)) for tag_id in tag_ids]
        return word_tags_to_spans(word_offsets, tags, self.scheme, confidences, span_score)


# ---------------------------------------------------------------------------------------------------------
# windows for training


def window_word_labels(window: dict) -> list[list[int]]:
    """The label rows at the word-start positions of a window, in
    word order (gold tags per word and channel)."""
    word_ids = window["word_ids"]
    return [
        label
        for p, (w, label) in enumerate(zip(word_ids, window["labels"], strict=True))
        if w != NO_WORD and (p == 0 or word_ids[p - 1] != w)
    ]


def collate(windows: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of windows to its longest one.

    Args:
        windows: window dicts from ``Encoder`` (extra keys such as ``doc_id`` are left out).
        pad_token_id: the tokenizer's pad id.

    Returns:
        input_ids, attention_mask, word_ids (batch, seq_len); token_type_ids and context_mask if present;
        labels (batch, seq_len, num_channels). Padding: pad_token_id, 0, -1, 0, 0, -100.
    """
    if not windows:
        raise ValueError("collate got an empty batch")
    length = max(len(w["input_ids"]) for w in windows)
    pads = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0, "word_ids": NO_WORD,
            "context_mask": 0}
    batch = {}
    for key, pad in pads.items():
        if key in windows[0]:
            batch[key] = torch.tensor(
                [list(w[key]) + [pad] * (length - len(w[key])) for w in windows], dtype=torch.long
            )  # shape: (batch, seq_len)
    if "labels" in windows[0]:
        num_channels = len(next((w["labels"][0] for w in windows if w["labels"]), [IGNORE_INDEX]))
        pad = [IGNORE_INDEX] * num_channels
        batch["labels"] = torch.tensor(
            [list(w["labels"]) + [pad] * (length - len(w["labels"])) for w in windows], dtype=torch.long
        ).view(len(windows), length, num_channels)  # shape: (batch, seq_len, num_channels)
    return batch


def word_tags_to_spans(word_offsets: Sequence[tuple[int, int]], tags: Sequence[str], scheme: str = "BIO",
                       confidences: Sequence | None = None, span_score: str = "product") -> list[Span]:
    """Spans with character offsets from typed word tags (lenient decoding, see ``labels.tags_to_entities``).

    A *blank* word — empty character span, e.g. an unknown piece made only of whitespace — never starts or
    ends a span; an entity made only of blank words gives no span.

    Args:
        word_offsets: (start, end) character span of each word.
        tags: one typed tag per word (``O``, ``B-T``, ``I-T``; BIOES adds ``E-T``, ``S-T``).
        scheme: "BIO" or "BIOES" (checked; both decode with the same lenient rules).
        confidences: each word's SPAN_OPEN, SPAN_CONTINUE, SPAN_CLOSE log-probabilities (words, 3); when
            given, each span's ``score`` is ``modeling.span_confidence`` over the entity's words.
        span_score: ``modeling.span_confidence``'s rule (the model's ``span_score``).
    """
    check_scheme(scheme)
    if len(tags) != len(word_offsets):
        raise ValueError(f"{counted(len(tags), 'tag')} for {counted(len(word_offsets), 'word')}")
    for tag in tags:
        if split_tag(tag)[0] != OUTSIDE and split_tag(tag)[1] is None:
            raise ValueError(f"untyped tag {tag!r}: word_tags_to_spans needs typed tags (B-T)")
    spans = []
    for first, last, label in tags_to_entities(tags):
        score = None if confidences is None else span_confidence(confidences, first, last, span_score)
        while first <= last and word_offsets[first][0] >= word_offsets[first][1]:
            first += 1  # a blank word (empty character span) never starts a span...
        while last >= first and word_offsets[last][0] >= word_offsets[last][1]:
            last -= 1  # ...nor ends one
        if first <= last:
            spans.append(Span(word_offsets[first][0], word_offsets[last][1], label, score=score))
    return spans


# ---------------------------------------------------------------------------------------------------------
# helpers


def _plain_backend(tokenizer):
    """A copy of the Rust tokenizer with truncation and padding
    off (the caller's tokenizer is not touched)."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def _special_tokens(backend) -> tuple[list[int], list[int], tuple[list[int], int, list[int]]]:
    """(prefix ids, suffix ids, (prefix type ids, text type id,
    suffix type ids)) the tokenizer adds to one text."""
    probe = backend.encode("a", add_special_tokens=True)
    text_positions = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
    if not text_positions:
        raise ValueError("cannot find the text between the special tokens of the tokenizer's template")
    first, last = text_positions[0], text_positions[-1]
    ids, types = probe.ids, probe.type_ids
    return ids[:first], ids[last + 1 :], (types[:first], types[first], types[last + 1 :])


def _units(in_word: list[bool], word_start: list[bool]) -> list[tuple[int, int]]:
    """[start, end) piece ranges: each word with the non-word pieces just before it (leading ones go to the
    first unit, trailing ones to the last)."""
    starts: list[int] = []
    run_start: int | None = None
    for i, (inside, starts_word) in enumerate(zip(in_word, word_start, strict=True)):
        if not inside:
            run_start = i if run_start is None else run_start
            continue
        if starts_word:
            starts.append(i if run_start is None else run_start)
        run_start = None
    if not in_word:
        return []
    if not starts:
        return [(0, len(in_word))]
    starts[0] = 0
    return list(zip(starts, starts[1:] + [len(in_word)], strict=True))


def _words(in_word: list[bool], word_start: list[bool]) -> list[tuple[int, int]]:
    """[first, end) piece range of each word."""
    words: list[tuple[int, int]] = []
    first: int | None = None
    for i, (inside, starts_word) in enumerate(zip(in_word, word_start, strict=True)):
        if first is not None and (not inside or starts_word):
            words.append((first, i))
            first = None
        if inside and starts_word:
            first = i
    if first is not None:
        words.append((first, len(in_word)))
    return words


def _pack(units: list[tuple[int, int]], capacity: int, stride: int) -> list[tuple[int, int]]:
    """[u0, u1) unit ranges of the windows: greedy, each <=
    capacity pieces, overlapping by <= stride pieces."""
    if not units:
        return [(0, 0)]
    sizes = [end - start for start, end in units]
    assert max(sizes) <= capacity, "long units are split before packing"
    windows = []
    u0 = 0
    while True:
        u1, size = u0, 0
        while u1 < len(units) and size + sizes[u1] <= capacity:
            size += sizes[u1]
            u1 += 1
        windows.append((u0, u1))
        if u1 == len(units):
            return windows
        # Next window: step back over whole units while they fit in the stride and leave room for unit u1.
        next_u0, overlap = u1, 0
        while (
            next_u0 - 1 > u0
            and overlap + sizes[next_u0 - 1] <= stride
            and overlap + sizes[next_u0 - 1] + sizes[u1] <= capacity
        ):
            next_u0 -= 1
            overlap += sizes[next_u0]
        u0 = next_u0


def _pack_own(units: list[tuple[int, int]], capacity: int, breaks: list[int]) -> list[tuple[int, int]]:
    """[u0, u1) unit ranges of the windows' own words when windows carry context: consecutive, one line each
    (``breaks``: sorted indices of the units that follow a line break), a line longer than ``capacity`` pieces
    cut into as many units as fit (one unit at least)."""
    if not units:
        return [(0, 0)]
    sizes = [end - start for start, end in units]
    ranges = []
    for line_start, line_end in zip([0, *breaks], [*breaks, len(units)], strict=True):
        u0 = line_start
        while u0 < line_end:
            u1, size = u0, 0
            while u1 < line_end and size + sizes[u1] <= capacity:
                size += sizes[u1]
                u1 += 1
            u1 = max(u1, u0 + 1)  # a unit longer than the own part: alone, with less context (see _encode)
            ranges.append((u0, u1))
            u0 = u1
    return ranges


def _line_breaks(text: str, pieces: _Pieces) -> list[int]:
    """Sorted indices of the units whose word comes after a line break in ``text`` (from the previous
    unit's last word piece to this unit's first)."""
    breaks = []
    previous_end = None  # character where the previous unit's last word piece ends
    for u, (start, end) in enumerate(pieces.units):
        inside = [p for p in range(start, end) if pieces.in_word[p]]
        if not inside:
            continue
        if previous_end is not None and "\n" in text[previous_end : pieces.offsets[inside[0]][0]]:
            breaks.append(u)
        previous_end = pieces.offsets[inside[-1]][1]
    return breaks


def _context(sources: list[tuple[list[int], list[tuple[int, int]]]], budget: int,
             direction: int) -> list[int]:
    """Up to ``budget`` ids of whole units, nearest first: ``sources`` are (ids, units) from the nearest on,
    read backwards (``direction`` -1, the context before a window) or forwards (1, after it)."""
    taken: list[list[int]] = []
    size = 0
    for ids, units in sources:
        for start, end in (reversed(units) if direction < 0 else units):
            if size + end - start > budget:
                return [i for unit in (reversed(taken) if direction < 0 else taken) for i in unit]
            taken.append(ids[start:end])
            size += end - start
    return [i for unit in (reversed(taken) if direction < 0 else taken) for i in unit]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) without surrounding whitespace (byte-level and Metaspace pieces may include a space)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _window_edge_tag(tag: str, first: bool, scheme: str) -> str:
    """The tag a word gets when it is the first (``first``) or last word of a window."""
    prefix, entity_type = split_tag(tag)
    if scheme == "BIO":
        mapping = {"I": "B"} if first else {}
    elif first:
        mapping = {"I": "B", "E": "S"}
    else:
        mapping = {"I": "E", "B": "S"}
    return f"{mapping[prefix]}-{entity_type}" if prefix in mapping else tag


def joins_across_cut(left_tag: str, right_tag: str, left_at_cut: bool, right_at_cut: bool) -> bool:
    """Whether two consecutive words' merged tags (typed, e.g.
    ``B-X``) are one entity that a window cut split.

    ``left_at_cut``: the left word was taken from a window whose last word it is (under BIOES its tag was
    re-tagged I-X -> E-X, B-X -> S-X); ``right_at_cut``: the right word from a window whose first word it is
    (I-X -> B-X, E-X -> S-X). The entity continues across when both words have the same type and each side
    either continues it (B-/I- on the left, I-/E- on the right) or may have been re-tagged at its cut, and
    they do not already continue it on both sides. Read the same way under BIO (no E-/S- tags) and BIOES.
    """
    left_prefix, left_type = split_tag(left_tag)
    right_prefix, right_type = split_tag(right_tag)
    if OUTSIDE in (left_prefix, right_prefix) or left_type != right_type:
        return False
    left_open, right_open = left_prefix in ("B", "I"), right_prefix in ("I", "E")
    return not (left_open and right_open) and (left_open or left_at_cut) and (right_open or right_at_cut)


def rejoined_tag(tag: str, join_left: bool, join_right: bool) -> str:
    """``tag`` continuing the entity of the word before it (B -> I, S -> E) and/or into the word after it
    (E -> I, S -> B)."""
    prefix, entity_type = split_tag(tag)
    if join_left:
        prefix = {"B": "I", "S": "E"}.get(prefix, prefix)
    if join_right:
        prefix = {"E": "I", "S": "B"}.get(prefix, prefix)
    return f"{prefix}-{entity_type}"


def _continuation_tag(tag: str) -> str:
    prefix, entity_type = split_tag(tag)
    return OUTSIDE if prefix == OUTSIDE else f"I-{entity_type}"


def _describe(doc: Document, span: Span) -> str:
    return f"{doc.id}:{span.start}-{span.end} {span.label} {span.text_in(doc.text)[:60]!r}"


def _as_list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)
