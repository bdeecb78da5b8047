"""Tag schemes, label sets and the conversion between spans and word tags.

Tags live on *words* (see docs/architecture.md, "Words"). A word is given here only by its character span
``(start, end)``; the encoder decides what the words are.

Schemes: ``"BIO"`` (IOB2, the default; ``"IOB2"`` is accepted as a name for it) and ``"BIOES"``. Readers may
meet IOB1 (``I-`` starts an entity, ``B-`` only separates two adjacent entities of one type); ``iob1_to_iob2``
turns it into IOB2 and ``repair_tags`` fixes broken IOB2/BIOES sequences. The grammar of one tag
(``split_tag``) and the lenient reading of a tag sequence (``tags_to_entities``) come from cardioner.modeling.

Channels (docs/architecture.md, "Channels"): a flat task has one channel holding every entity type, tags
``O, B-T1, I-T1, B-T2, I-T2, ...`` over the sorted types; a multi-label task has one channel per type, each
with the untyped tags ``O, B, I`` (BIOES: ``O, B, I, E, S``). Tag ids are positions in ``Channel.tags``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

# The tag grammar is defined once, in the model file (which every export carries and which imports nothing
# from cardioner), and used from here: split_tag ("B-T" -> ("B", "T"), ValueError outside the grammar) and
# tags_to_entities (lenient decoding of BIO and BIOES).
from cardioner.modeling import OUTSIDE, split_tag, tags_to_entities

if TYPE_CHECKING:  # only annotations name Span: cardioner.data's readers import this module
    from cardioner.data.document import Span

SCHEMES = ("BIO", "BIOES")
_SCHEME_ALIASES = {"BIO": "BIO", "IOB2": "BIO", "BIOES": "BIOES", "IOBES": "BIOES"}
_PREFIXES = {"BIO": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


def check_scheme(scheme: str) -> str:
    """The canonical name (``"BIO"`` or ``"BIOES"``) of a tag
    scheme; ValueError naming the bad value otherwise."""
    canonical = _SCHEME_ALIASES.get(str(scheme).upper())
    if canonical is None:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of BIO (IOB2), BIOES")
    return canonical


def id2label(tags: Sequence[str]) -> dict[int, str]:
    """``{0: "O", 1: "B-T", ...}`` for a list of tags (the form Hugging Face configs hold)."""
    return dict(enumerate(tags))


def label2id(tags: Sequence[str]) -> dict[str, int]:
    """``{"O": 0, "B-T": 1, ...}`` for a list of tags."""
    return {tag: index for index, tag in enumerate(tags)}


@dataclass(frozen=True)
class Channel:
    """One tag sequence over the words: the entity types it encodes and its tags.

    Args:
        types: the entity types whose spans are encoded in this channel (sorted).
        scheme: "BIO" or "BIOES".
        typed: whether tags carry the type (``B-T``, flat channel) or not (``B``, one type per channel).
    """

    types: tuple[str, ...]
    scheme: str = "BIO"
    typed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", check_scheme(self.scheme))
        if not self.typed and len(self.types) != 1:
            raise ValueError(f"an untyped channel holds exactly one entity type; got {list(self.types)}")
        if len(set(self.types)) != len(self.types):
            raise ValueError(f"duplicate entity types in channel: {list(self.types)}")

    @cached_property
    def tags(self) -> tuple[str, ...]:
        """All tags, ``O`` first (tag id = position)."""
        prefixes = _PREFIXES[self.scheme]
        if not self.typed:
            return (OUTSIDE, *prefixes)
        return (OUTSIDE, *(f"{prefix}-{t}" for t in self.types for prefix in prefixes))

    @cached_property
    def id2label(self) -> dict[int, str]:
        return id2label(self.tags)

    @cached_property
    def label2id(self) -> dict[str, int]:
        return label2id(self.tags)

    def tag_id(self, tag: str) -> int:
        """The id of a typed tag (``"B-T"``; the type is dropped for an untyped channel)."""
        prefix, entity_type = split_tag(tag)
        if prefix != OUTSIDE:
            if entity_type not in self.types:
                raise ValueError(
                    f"tag {tag!r}: type {entity_type!r} is not in this channel {list(self.types)}"
                )
            if not self.typed:
                tag = prefix
        try:
            return self.label2id[tag]
        except KeyError:
            raise ValueError(f"tag {tag!r} is not in the {self.scheme} tag set {list(self.tags)}") from None

    def typed_tag(self, tag_id: int) -> str:
        """The typed tag (``"B-T"``) of a tag id, for either kind of channel."""
        if not 0 <= int(tag_id) < len(self.tags):
            raise ValueError(f"tag id {tag_id} out of range for {len(self.tags)} tags {list(self.tags)}")
        tag = self.tags[int(tag_id)]
        if self.typed or tag == OUTSIDE:
            return tag
        return f"{tag}-{self.types[0]}"


@dataclass(frozen=True)
class LabelSet:
    """The channels of a task: one typed channel (flat) or one untyped channel per type (multi-label).

    Build it with ``LabelSet.flat(types)``, ``LabelSet.multilabel(types)`` or
    ``LabelSet.from_documents(docs)``.
    """

    channels: tuple[Channel, ...]

    @classmethod
    def flat(cls, types: Iterable[str], scheme: str = "BIO") -> LabelSet:
        return cls((Channel(_sorted_types(types), scheme, typed=True),))

    @classmethod
    def multilabel(cls, types: Iterable[str], scheme: str = "BIO") -> LabelSet:
        return cls(tuple(Channel((t,), scheme, typed=False) for t in _sorted_types(types)))

    @classmethod
    def from_documents(cls, documents: Iterable, multilabel: bool = False, scheme: str = "BIO") -> LabelSet:
        """The label set over every span label of ``documents`` (``Document`` objects)."""
        types = {span.label for doc in documents for span in doc.spans}
        return cls.multilabel(types, scheme) if multilabel else cls.flat(types, scheme)

    @classmethod
    def from_config(cls, config: dict) -> LabelSet:
        """Inverse of ``to_config``."""
        make = cls.multilabel if config.get("multilabel") else cls.flat
        return make(config["types"], config.get("scheme", "BIO"))

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("a label set needs at least one channel")
        schemes = {c.scheme for c in self.channels}
        if len(schemes) != 1:
            raise ValueError(f"all channels must share one tag scheme; got {sorted(schemes)}")
        seen = [t for c in self.channels for t in c.types]
        if len(set(seen)) != len(seen):
            raise ValueError(f"an entity type belongs to more than one channel: {seen}")

    @property
    def scheme(self) -> str:
        return self.channels[0].scheme

    @property
    def is_multilabel(self) -> bool:
        return len(self.channels) > 1 or not self.channels[0].typed

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(sorted(t for c in self.channels for t in c.types))

    @property
    def id2label(self) -> dict[int, str]:
        """id2label of the single channel (flat) or of each
        channel's shared tag set (multi-label: O, B, I...)."""
        return self.channels[0].id2label

    @property
    def label2id(self) -> dict[str, int]:
        return self.channels[0].label2id

    def channel_of(self, entity_type: str) -> int:
        """The index of the channel that encodes ``entity_type``."""
        for index, channel in enumerate(self.channels):
            if entity_type in channel.types:
                return index
        raise ValueError(f"unknown entity type {entity_type!r}; the label set has {list(self.types)}")

    def to_config(self) -> dict:
        return {"types": list(self.types), "scheme": self.scheme, "multilabel": self.is_multilabel}

    # -- what a model's config says of these labels (CardioNERConfig) ----------------------------------------

    @property
    def model_id2label(self) -> dict[int, str]:
        """The model's id2label: the typed tags over every type (``O, B-T1, I-T1, ...``); a multi-label model
        reads its channels' tags from it in order."""
        return Channel(self.types, self.scheme, typed=True).id2label

    @property
    def channel_types(self) -> list[str] | None:
        """The model's ``channel_types``: the type of each channel when every type has its own channel, None
        for one typed channel."""
        return [channel.types[0] for channel in self.channels] if self.is_multilabel else None

    def model_rows(self, rows: list[list[float]]) -> list:
        """Per-channel rows of per-tag values (class weights, tag priors) in the model config's layout: one
        row per channel, or the single row of a flat label set."""
        return rows if self.is_multilabel else rows[0]

    def describe(self) -> str:
        """The kind of task these labels make, for people (model cards)."""
        return "multi-label (overlapping entity types)" if self.is_multilabel else "flat"


def _sorted_types(types: Iterable[str]) -> tuple[str, ...]:
    ordered = tuple(sorted(set(types)))
    for t in ordered:
        if not isinstance(t, str) or not t or t == OUTSIDE:
            raise ValueError(f"invalid entity type {t!r}")
    return ordered


# ---------------------------------------------------------------------------------------------------------
# spans <-> word tags


@dataclass(frozen=True)
class SpanAlignment:
    """How spans map onto words: ``entities`` as (first_word, last_word, label), and the spans that do not map
    exactly, with the reason (``problems``: (span, reason))."""

    entities: list[tuple[int, int, str]]
    problems: list[tuple[Span, str]]


# Reasons a span does not survive spans -> tags -> spans exactly.
EDGE_INSIDE_WORD = "edge inside a word"
EDGE_OFF_WORDS = "edge not on a word (whitespace or untokenised characters)"
NO_WORD = "covers no word"
DISCONTINUOUS = "discontinuous (encoded as its whole extent)"
CONFLICT = "overlaps another span of the same channel (dropped)"
DUPLICATE = "duplicate of another span (encoded once)"


def align_spans(word_offsets: Sequence[tuple[int, int]], spans: Iterable[Span]) -> SpanAlignment:
    """Map spans onto word ranges, non-overlapping, and say which ones will not round-trip exactly.

    A span maps onto every word it overlaps by at least one character. It is *exact* when its start is a
    word's start and its end a word's end (and it is contiguous). Overlapping spans cannot share one tag
    sequence: the earlier (then longer) one is kept and the other reported.

    Args:
        word_offsets: (start, end) character span of each word, in text order, non-overlapping; blank words
            (start == end) are allowed and never match a span edge.
        spans: the spans of one channel.

    Returns:
        SpanAlignment with entities sorted by first word.
    """
    starts = [s for s, _ in word_offsets]
    ends = [e for _, e in word_offsets]
    start_index: dict[int, int] = {}  # character -> first (non-blank) word starting there
    end_index: dict[int, int] = {}  # character -> last (non-blank) word ending there
    for i, (s, e) in enumerate(word_offsets):
        if s < e:
            start_index.setdefault(s, i)
            end_index[e] = i
    taken = [False] * len(word_offsets)
    entities: list[tuple[int, int, str]] = []
    problems: list[tuple[Span, str]] = []
    seen: set[tuple[int, int, str]] = set()
    for span in sorted(spans, key=lambda s: (s.start, -s.end, s.label)):
        key = (span.start, span.end, span.label)
        if key in seen and not span.fragments:
            problems.append((span, DUPLICATE))
            continue
        seen.add(key)
        first = _bisect_right(ends, span.start)  # first word ending after span.start
        last = _bisect_left(starts, span.end) - 1  # last word starting before span.end
        if first > last:
            problems.append((span, NO_WORD))
            continue
        if any(taken[first : last + 1]):
            problems.append((span, CONFLICT))
            continue
        for i in range(first, last + 1):
            taken[i] = True
        entities.append((first, last, span.label))
        if span.fragments and len(span.fragments) > 1:
            problems.append((span, DISCONTINUOUS))
        elif start_index.get(span.start) != first or end_index.get(span.end) != last:
            inside = starts[first] < span.start or ends[last] > span.end
            problems.append((span, EDGE_INSIDE_WORD if inside else EDGE_OFF_WORDS))
    entities.sort()
    return SpanAlignment(entities, problems)


def _bisect_right(values: Sequence[int], x: int) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _bisect_left(values: Sequence[int], x: int) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def entities_to_tags(
    num_words: int, entities: Iterable[tuple[int, int, str | None]], scheme: str = "BIO"
) -> list[str]:
    """Word tags from non-overlapping (first_word, last_word, label) entities (label None: untyped tags)."""
    scheme = check_scheme(scheme)
    tags = [OUTSIDE] * num_words
    for first, last, label in entities:
        if scheme == "BIOES" and first == last:
            tags[first] = _join("S", label)
            continue
        tags[first] = _join("B", label)
        for i in range(first + 1, last + 1):
            tags[i] = _join("I", label)
        if scheme == "BIOES":
            tags[last] = _join("E", label)
    return tags


def spans_to_word_tags(
    word_offsets: Sequence[tuple[int, int]], spans: Iterable[Span], scheme: str = "BIO"
) -> tuple[list[str], list[Span]]:
    """Typed word tags (``B-T``...) for spans, and the spans that will not come back exactly.

    Args:
        word_offsets: (start, end) character span of each word, in text order.
        spans: spans of one channel (overlapping ones: the first is kept, see ``align_spans``).
        scheme: "BIO" or "BIOES".

    Returns:
        (tags, inexact): one tag per word; the spans whose edges fall inside a word or off the words, that
        cover no word, that are discontinuous, duplicated, or conflict with another span.
    """
    alignment = align_spans(word_offsets, spans)
    tags = entities_to_tags(len(word_offsets), alignment.entities, scheme)
    return tags, [span for span, _ in alignment.problems]




# ---------------------------------------------------------------------------------------------------------
# scheme conversion and repair (used by the CoNLL reader)


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 -> IOB2: an ``I-T`` that starts an entity (after
    O, another type, or at the start) becomes ``B-T``."""
    return repair_tags(tags, "BIO")[0]


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """BIOES -> BIO (``S-T`` -> ``B-T``, ``E-T`` -> ``I-T``), reading imperfect sequences leniently (a stray
    ``E-T`` after ``S-T`` is an entity of its own, so it becomes ``B-T``)."""
    return entities_to_tags(len(tags), tags_to_entities(tags), "BIO")


def bio_to_bioes(tags: Sequence[str]) -> list[str]:
    """BIO -> BIOES, reading leniently (an ``I-T`` after O starts an entity)."""
    return entities_to_tags(len(tags), tags_to_entities(tags), "BIOES")


def repair_tags(tags: Sequence[str], scheme: str = "BIO") -> tuple[list[str], int]:
    """Make a tag sequence valid in ``scheme`` by the lenient decoding rules; count the tags changed.

    BIO: an ``I-T`` after O or after another type becomes ``B-T`` (the IOB2 rule). BIOES: entities are read
    leniently (``B-T O`` is a one-word entity ``S-T``, a stray ``I-T`` starts one...) and rewritten.
    Untyped tags (``B``, ``I`` of a multi-label channel) are accepted and stay untyped.

    Returns:
        (repaired tags, number of positions that changed).
    """
    scheme = check_scheme(scheme)
    if scheme == "BIO" and any(split_tag(tag)[0] in ("E", "S") for tag in tags):
        raise ValueError(
            f"E-/S- tags in a BIO sequence: {[t for t in tags if t[:1] in 'ES']}; use scheme='BIOES'"
        )
    repaired = entities_to_tags(len(tags), tags_to_entities(tags), scheme)
    return repaired, sum(a != b for a, b in zip(tags, repaired, strict=True))


def detect_scheme(sequences: Iterable[Sequence[str]] | Sequence[str]) -> str:
    """Guess the scheme of tag sequences (or of one flat list of tags): ``"BIOES"`` (E-/S- seen), ``"IOB1"``
    (entities start with I- and B- appears only right after the same type) or ``"IOB2"``."""
    sequences = list(sequences)
    if sequences and isinstance(sequences[0], str):
        sequences = [sequences]
    starts_with_b = starts_with_i = False
    for tags in sequences:
        previous: tuple[str, str | None] = (OUTSIDE, None)
        for tag in tags:
            prefix, entity_type = split_tag(tag)
            if prefix in ("E", "S"):
                return "BIOES"
            continues = previous[0] != OUTSIDE and previous[1] == entity_type
            if prefix == "B" and not continues:
                starts_with_b = True
            elif prefix == "I" and not continues:
                starts_with_i = True
            previous = (prefix, entity_type)
    return "IOB1" if starts_with_i and not starts_with_b else "IOB2"


def _join(prefix: str, entity_type: str | None) -> str:
    return prefix if entity_type is None else f"{prefix}-{entity_type}"
