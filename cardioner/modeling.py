"""cardioner token-classification models: one self-contained file.

This exact file is copied into every exported model folder and executed by
``AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=True)`` on machines that have only
torch and transformers. It imports nothing but torch, transformers and the Python standard library.

It reads top to bottom; each part uses only what comes before it:

1. Words: which subwords make a word, decided from the token ids alone.
2. Tags: the tag grammar (``split_tag``, ``tags_to_entities``: cardioner.labels uses these), what the tag
   scheme forbids, and how a model's labels are laid out as channels of tags (``TagLayout``).
3. CRF: a linear-chain CRF with pytorch-crf's parameters, and Viterbi under the scheme's constraints alone.
4. Heads: hidden states -> scores per token (linear, mlp, bilstm, cnn, attention, fourier_kan, wavelet_kan).
5. Configuration: the head-settings table (``HEAD_SETTINGS``) and ``CardioNERConfig``.
6. Decoders: the decoding rule the config chooses (softmax, sigmoid channels, a CRF, a CRF per channel):
   emissions -> loss, and emissions -> a tag per word and channel.
7. The model: backbone -> head -> emissions -> loss or decode, in one class (``TokenClassificationModel``;
   the other exported names are that class with a setting fixed).

Words. A *word* is a run of subwords decided from the token ids alone, so that training, cardioner's own
inference and the stock ``pipeline("token-classification")`` (which passes only ``input_ids``) agree. Every
vocabulary id gets a class (``build_token_classes``), stored in the model as the buffer ``token_classes``:

- ``TOKEN_CONTINUATION`` (0): continues the current word (``##ing`` in WordPiece; a piece without the
  ``▁``/``Ġ`` word marker in SentencePiece/byte-level BPE);
- ``TOKEN_WORD_START`` (1): starts a word (no ``##``; or carries the word marker);
- ``TOKEN_PUNCTUATION`` (2): a piece made only of punctuation/symbols (or the unknown token): a word of its
  own, and the piece after it starts a new word;
- ``TOKEN_SPECIAL`` (3): [CLS], [SEP], <pad>, ...: in no word;
- ``TOKEN_SPACE`` (4): a bare word marker (``▁``): in no word; the next piece starts a word.

With a WordPiece tokenizer (BERT, ELECTRA, DistilBERT, MiniLM) the words are exactly the pre-tokenizer's
(whitespace and punctuation splits); with SentencePiece and byte-level BPE they are whitespace-delimited
pieces with punctuation split off.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import TokenClassifierOutput

# ------------------------------------------------------------------------------------------------------------
# 1. Words: the class of every vocabulary id, word starts, and the words of a batch gathered into sequences
# ------------------------------------------------------------------------------------------------------------

TOKEN_CONTINUATION = 0
TOKEN_WORD_START = 1
TOKEN_PUNCTUATION = 2
TOKEN_SPECIAL = 3
TOKEN_SPACE = 4

_WORD_MARKERS = {"Metaspace": "\u2581", "ByteLevel": "\u0120"}


def _pre_tokenizer_types(node: dict | None) -> list[str]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        return [t for child in node.get("pretokenizers", []) for t in _pre_tokenizer_types(child)]
    return [node.get("type", "")]


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character of each byte (GPT-2's table), inverted: char -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


_BYTE_LEVEL_BYTES = _byte_level_alphabet()


def _byte_level_text(piece: str) -> str:
    """The text a byte-level piece stands for; a piece holding only part of a character counts as a letter."""
    raw = bytes(_BYTE_LEVEL_BYTES.get(ch, 0x3F) for ch in piece)
    text = raw.decode("utf-8", errors="ignore")
    return text if text or not raw else "a"


def build_token_classes(tokenizer) -> torch.Tensor:
    """Classify every vocabulary id for word segmentation (see the module docstring).

    Args:
        tokenizer: a fast (Rust-backed) Hugging Face tokenizer.

    Returns:
        int8 tensor of shape (vocab_size,) with values TOKEN_*; ids beyond the vocabulary are TOKEN_SPECIAL.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"cardioner needs a fast tokenizer (offsets, word ids); got "
                         f"{type(tokenizer).__name__}")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    prefix = model.get("continuing_subword_prefix") or None
    marker = None
    for kind in _pre_tokenizer_types(spec.get("pre_tokenizer")) + _pre_tokenizer_types(spec.get("decoder")):
        if kind in _WORD_MARKERS:
            marker = _WORD_MARKERS[kind]
            break
    if model.get("type") == "WordPiece":
        marker = None
    vocab = tokenizer.get_vocab()  # token string -> id (added tokens included)
    size = max(len(tokenizer), max(vocab.values()) + 1)
    classes = torch.full((size,), TOKEN_SPECIAL, dtype=torch.int8)
    for token, index in vocab.items():
        if prefix is not None and token.startswith(prefix) and len(token) > len(prefix):
            body, kind = token[len(prefix) :], TOKEN_CONTINUATION
        elif marker is not None:
            starts = token.startswith(marker)
            body = token[len(marker) :] if starts else token
            kind = TOKEN_WORD_START if starts else TOKEN_CONTINUATION
        else:
            body, kind = token, TOKEN_WORD_START
        if marker == _WORD_MARKERS["ByteLevel"]:
            body = _byte_level_text(body)
        if body.strip() == "":
            kind = TOKEN_SPACE if marker is not None else kind
        elif all(not ch.isalnum() for ch in body):
            kind = TOKEN_PUNCTUATION
        classes[index] = kind
    for index in tokenizer.all_special_ids:
        classes[index] = TOKEN_SPECIAL
    if tokenizer.unk_token_id is not None:
        classes[tokenizer.unk_token_id] = TOKEN_PUNCTUATION  # an unknown piece is a word of its own
    return classes


def word_start_mask(
    token_classes: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which positions are in a word, and which start one.

    Args:
        token_classes: (batch, seq_len) TOKEN_* class of each input id (``table[input_ids]``).
        attention_mask: (batch, seq_len) 1 for real tokens, 0 for padding; None means all real.

    Returns:
        (in_word, word_start): two bool tensors of shape (batch, seq_len).
    """
    classes = token_classes.long()
    real = torch.ones_like(classes, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    in_word = real & (classes <= TOKEN_PUNCTUATION)  # shape: (batch, seq_len)
    prev_classes = nn.functional.pad(classes[:, :-1], (1, 0), value=TOKEN_SPECIAL)  # shape: (batch, seq_len)
    prev_in_word = nn.functional.pad(in_word[:, :-1], (1, 0), value=False)
    boundary_before = ~prev_in_word | (prev_classes == TOKEN_PUNCTUATION)
    word_start = in_word & ((classes != TOKEN_CONTINUATION) | boundary_before)
    return in_word, word_start


def gather_positions(select: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the True entries of each row, left aligned.

    Args:
        select: (batch, seq_len) bool.

    Returns:
        (positions (batch, max_count) long, 0 at padding; mask (batch, max_count) bool).
    """
    batch, seq_len = select.shape
    counts = select.sum(1)  # shape: (batch,)
    max_count = int(counts.max()) if batch > 0 else 0
    arange = torch.arange(seq_len, device=select.device)
    keys = torch.where(select, arange, arange + seq_len)  # selected positions sort first, in order
    positions = keys.argsort(dim=1, stable=True)[:, :max_count]  # shape: (batch, max_count)
    slots = torch.arange(max_count, device=select.device)  # shape: (max_count,)
    mask = slots[None, :] < counts[:, None]  # shape: (batch, max_count)
    return positions * mask, mask


def gather_rows(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """values (batch, seq_len, ...) at positions (batch, k) -> (batch, k, ...)."""
    index = positions.view(*positions.shape, *([1] * (values.dim() - 2)))  # shape: (batch, k, 1...)
    return values.gather(1, index.expand(*positions.shape, *values.shape[2:]))


class Words:
    """Where the words of a batch are (``word_start_mask``), and their first subwords gathered into contiguous
    sequences: what the decoders read (special tokens and continuation subwords never reach them).

    Attributes:
        in_word, word_start, gap: (batch, seq_len) bool; gap marks real, non-special tokens outside words
            (a bare word marker such as "▁").
        word_index: (batch, seq_len) index of the word a position belongs to (or follows, outside words); -1
            before the first word.
        positions: (batch, max_words) position of each word's first subword (0 at padding).
        word_mask: (batch, max_words) bool, left aligned.
    """

    def __init__(self, in_word: torch.Tensor, word_start: torch.Tensor, gap: torch.Tensor) -> None:
        self.in_word = in_word
        self.word_start = word_start
        self.gap = gap
        self.word_index = word_start.long().cumsum(1) - 1  # shape: (batch, seq_len)
        self.positions, self.word_mask = gather_positions(word_start)

    @classmethod
    def find(
        cls, token_classes: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> Words:
        """The words of a batch.

        Args:
            token_classes: (vocab_size,) the TOKEN_* class of each id (``build_token_classes``); ids beyond it
                count as special tokens.
            input_ids, attention_mask: (batch, seq_len).
        """
        in_table = input_ids < token_classes.shape[0]
        classes = token_classes[input_ids.clamp(0, token_classes.shape[0] - 1)]  # shape: (batch, seq_len)
        classes = torch.where(in_table, classes, torch.full_like(classes, TOKEN_SPECIAL))
        in_word, word_start = word_start_mask(classes, attention_mask)
        gap = attention_mask.bool() & ~in_word & (classes != TOKEN_SPECIAL)
        return cls(in_word, word_start, gap)

    def spread(self, word_values: torch.Tensor) -> torch.Tensor:
        """Per-word values (batch, max_words, ...) at every position: its word's (outside words: the word
        before; before the first word: the first word's; zeros when the batch has no word) -> (batch, seq_len,
        ...)."""
        batch, seq_len = self.word_index.shape
        if word_values.shape[1] == 0:
            return word_values.new_zeros(batch, seq_len, *word_values.shape[2:])
        own = self.word_index.clamp(0, word_values.shape[1] - 1)  # shape: (batch, seq_len)
        return gather_rows(word_values, own)


# ------------------------------------------------------------------------------------------------------------
# 2. Tags: the grammar of a tag, entities from tags, what the scheme forbids, and a model's labels as channels
# ------------------------------------------------------------------------------------------------------------

OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")  # BIO uses B and I; BIOES adds E (last word) and S (single word)


def split_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag into (prefix, entity type): ``"B-DISO"`` -> ``("B", "DISO")``, ``"O"`` -> ``("O", None)``,
    an untyped ``"B"`` (a multi-label channel's tag) -> ``("B", None)``.

    The one grammar of tags in cardioner (cardioner.labels and the corpus readers use this function): ``O``,
    or a prefix ``B``/``I``/``E``/``S`` alone or followed by ``-`` and a type; the type may itself hold ``-``
    (only the first ``-`` separates). ValueError, naming the tag, for anything else.
    """
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, sep, entity_type = tag.partition("-")
    if prefix not in PREFIXES or (sep and not entity_type):
        raise ValueError(f"unknown tag {tag!r}: expected O or a B-/I-/E-/S- prefix followed by a type")
    return prefix, (entity_type if sep else None)


def tags_to_entities(tags: list[str]) -> list[tuple[int, int, str | None]]:
    """(first, last, type) of every entity in a sequence of tags, read leniently (BIO and BIOES alike).

    ``B-T`` starts an entity; ``I-T`` continues an entity of type T, else starts one (the IOB2 repair rule);
    ``E-T`` ends an entity of type T (a lone ``E-T`` is a one-word entity); ``S-T`` is a one-word entity;
    ``O`` ends the current entity. Untyped tags (``B``, ``I`` of a multi-label channel) give entities of type
    None.
    """
    entities: list[tuple[int, int, str | None]] = []
    current: list = []  # [first, last, type] of the open entity, or empty
    for index, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        if prefix in ("I", "E") and current and current[2] == entity_type:
            current[1] = index
        else:
            if current:
                entities.append(tuple(current))
            current = [index, index, entity_type] if prefix != OUTSIDE else []
        if prefix in ("E", "S") and current:
            entities.append(tuple(current))
            current = []
    if current:
        entities.append(tuple(current))
    return entities


def transition_constraints(tags: list[str]) -> tuple[list[bool], list[list[bool]], list[bool]]:
    """Which start, transition and end moves the tag scheme allows (BIO, or BIOES when E-/S- tags exist).

    BIO: I-X only after B-X or I-X (so never at the start, after O or after another type).
    BIOES: after B-X/I-X only I-X or E-X; after O/E-*/S-* only O, B-*, S-*; start only at O/B/S, end only
    after O/E/S.

    Args:
        tags: the tag of each id, in id order (typed ``B-X`` or untyped ``B``).

    Returns:
        (start_allowed (num_tags,), allowed[from][to] (num_tags, num_tags), end_allowed (num_tags,)).
    """
    parts = [split_tag(tag) for tag in tags]
    bioes = any(prefix in ("E", "S") for prefix, _ in parts)
    continuing = ("I", "E") if bioes else ("I",)  # prefixes that continue an open entity

    def allowed(source: tuple[str, str | None] | None, target: tuple[str, str | None]) -> bool:
        target_prefix, target_type = target
        if source is None:  # start of the sequence
            return target_prefix not in continuing
        source_prefix, source_type = source
        if source_prefix in ("B", "I"):  # an entity is open: it continues with its type, or (BIO only) ends
            return source_type == target_type if target_prefix in continuing else not bioes
        return target_prefix not in continuing

    start_allowed = [allowed(None, part) for part in parts]
    transitions = [[allowed(source, target) for target in parts] for source in parts]
    end_allowed = [not (bioes and prefix in ("B", "I")) for prefix, _ in parts]
    return start_allowed, transitions, end_allowed


def entity_continuations(tags: list[str]) -> list[list[bool]]:
    """Which tag, on the next word, continues the entity a tag leaves open (as ``tags_to_entities`` reads
    them).

    ``continues[a][b]``: a word tagged ``b`` right after a word tagged ``a`` extends ``a``'s entity: ``a`` is
    B-X or I-X (the entity is open) and ``b`` is I-X or E-X (same type). An entity ends at a word whose next
    word's tag is not a continuation; span confidences ask how likely that is (``span_confidence``).

    Args:
        tags: the tag of each id (typed ``B-X`` or untyped ``B``).

    Returns:
        (num_tags, num_tags) nested lists of bool.
    """
    parts = [split_tag(tag) for tag in tags]
    return [[source[0] in ("B", "I") and target[0] in ("I", "E") and source[1] == target[1]
             for target in parts] for source in parts]


def continuation_tags(labels: list[str]) -> list[int]:
    """Label id that a word's continuation subwords carry, for each label id: ``I-X`` for ``B-X``, ``I-X``,
    ``E-X`` and ``S-X`` (``I`` for untyped tags) where the labels have it; ``O`` keeps ``O``."""
    index = {label: position for position, label in enumerate(labels)}
    result = []
    for position, label in enumerate(labels):
        prefix, entity_type = split_tag(label)
        inside = f"I-{entity_type}" if entity_type else "I"
        result.append(index[inside] if prefix != OUTSIDE and inside in index else position)
    return result


def tag_types(labels: list[str]) -> list[int]:
    """Entity type number of each label id, in order of first appearance; -1 for ``O``."""
    types: dict[str | None, int] = {}
    result = []
    for label in labels:
        prefix, entity_type = split_tag(label)
        result.append(-1 if prefix == OUTSIDE else types.setdefault(entity_type, len(types)))
    return result


def flat_channel_scores(scores: torch.Tensor) -> torch.Tensor:
    """Per-channel scores (..., channels, tags) -> typed-tag scores (..., 1 + channels * (tags - 1)).

    Each entity tag of a channel scores its margin over the channel's O score; the O column is 0. The argmax
    is O when no channel leaves O, else the channel tag with the widest margin.
    """
    margins = scores[..., 1:] - scores[..., :1]  # shape: (..., C, tags - 1)
    flat = margins.flatten(-2)  # shape: (..., C * (tags - 1))
    return torch.cat([torch.zeros_like(flat[..., :1]), flat], dim=-1)


class TagLayout:
    """A model's labels (id2label) laid out as channels of tags: the one place that tells a flat model from a
    multi-label one. Everything after it handles scores (..., channels, tags) and tags (..., channels).

    - Flat (``channel_types`` None): one channel whose tags are the labels themselves, ``O, B-T1, I-T1, ...``.
    - Multi-label: one channel per entity type (``channel_types``, in order), each with the untyped tags
      ``O, B, I`` (BIOES: ``O, B, I, E, S``); id2label holds the channels' typed tags ``O, B-T1, I-T1, B-T2,
      ...`` in channel order, so tag k > 0 of channel c is label ``1 + c * (num_tags - 1) + k - 1``.

    Args:
        labels: the label of each id, in id order (every one in the grammar of ``split_tag``).
        channel_types: the entity type of each channel, or None for a flat model.

    Attributes:
        tags: the tags of one channel (one decoding chain).
        label_ids: (channels, tags) the label id each channel's tag stands for.
        constraints: ``transition_constraints`` of a channel's tags: what the tag scheme forbids.
        continues: ``entity_continuations`` of a channel's tags: which next tag extends an entity.
        continuation, tag_type: ``continuation_tags`` and ``tag_types`` of the labels.
        outside: the label id of ``O``, or None.
    """

    def __init__(self, labels: list[str], channel_types: list[str] | None = None) -> None:
        self.labels = list(labels)
        self.flat = channel_types is None
        parts = [split_tag(label) for label in self.labels]
        if self.flat:
            self.tags = list(self.labels)
            self.label_ids = [list(range(len(self.labels)))]
        else:
            types = list(channel_types)
            per_channel = (len(self.labels) - 1) // max(len(types), 1)  # entity tags of a channel
            self.tags = [OUTSIDE] + [prefix for prefix, _ in parts[1 : 1 + per_channel]]
            expected = [OUTSIDE] + [f"{prefix}-{name}" for name in types for prefix in self.tags[1:]]
            if not types or per_channel < 2 or self.labels != expected:
                raise ValueError(f"id2label {self.labels} is not the channel layout {expected} of "
                                 f"channel_types {types}")
            first_ids = [1 + channel * per_channel for channel in range(len(types))]  # each channel's B
            self.label_ids = [[0, *range(first, first + per_channel)] for first in first_ids]
        self.num_channels = len(self.label_ids)
        self.num_tags = len(self.tags)
        self.constraints = transition_constraints(self.tags)
        self.continues = entity_continuations(self.tags)
        self.continuation = continuation_tags(self.labels)
        self.tag_type = tag_types(self.labels)
        self.outside = self.labels.index(OUTSIDE) if OUTSIDE in self.labels else None

    def channel_labels(
        self, labels: torch.Tensor | None, input_shape: tuple[int, ...]
    ) -> torch.Tensor | None:
        """Gold tag ids as (batch, seq_len, channels); a flat model also takes (batch, seq_len). None stays
        None."""
        if labels is None:
            return None
        shaped = labels[..., None] if self.flat and labels.dim() == 2 else labels
        if tuple(shaped.shape) != (*input_shape, self.num_channels):
            accepted = [(*input_shape, self.num_channels)] + ([tuple(input_shape)] if self.flat else [])
            raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_shape)}: "
                             f"expected one of {accepted} ({self.num_channels} channels)")
        return shaped

    def public(self, values: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """Outputs as a flat model has always shown them, without a channel dimension; multi-label ones as
        they are."""
        return values.squeeze(channel_dim) if self.flat else values

    def channel_logits(self, channel_scores: torch.Tensor) -> torch.Tensor | None:
        """The ``channel_logits`` output: a multi-label model's per-channel scores; None for a flat model (its
        ``logits`` are its one channel)."""
        return None if self.flat else channel_scores

    def label_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """(..., channels, tags) -> (..., num_labels) over id2label: a flat model's one channel as it is;
        several channels by each entity tag's margin over its channel's O (``flat_channel_scores``)."""
        return scores[..., 0, :] if self.flat else flat_channel_scores(scores)

    def channel_tag_labels(self, channel: int, tag_ids: list[int]) -> list[str]:
        """The labels (typed tags) that a channel's tag ids stand for."""
        return [self.labels[self.label_ids[channel][tag]] for tag in tag_ids]


# ------------------------------------------------------------------------------------------------------------
# 3. CRF: the algorithms (path score, forward, backward, Viterbi), the CRF module, scheme-only Viterbi
# ------------------------------------------------------------------------------------------------------------

FORBIDDEN_SCORE = -10000.0  # added to forbidden moves: exp() of it is 0 in float32, and it never wins a max
CRF_REDUCTIONS = ("token_mean", "mean", "sum", "none")


def _penalty(allowed: list, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    allowed_tensor = torch.tensor(allowed, dtype=torch.bool, device=device)
    zeros = torch.zeros(allowed_tensor.shape, dtype=dtype, device=device)
    return zeros.masked_fill(~allowed_tensor, FORBIDDEN_SCORE)


def _path_score(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    mask: torch.Tensor,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """Score of the given tag sequences. Shapes: emissions (N, L, T); tags, mask (N, L); start, end (N|1, T);
    transitions (N|1, T, T). Returns (N,); 0 for empty sequences."""
    rows, seq_len, num_tags = emissions.shape
    if seq_len == 0:
        return emissions.new_zeros(rows)
    weights = mask.to(emissions.dtype)
    emission_scores = emissions.gather(2, tags[..., None]).squeeze(-1) * weights  # shape: (N, L)
    score = start.expand(rows, num_tags).gather(1, tags[:, :1]).squeeze(1) * weights[:, 0]  # shape: (N,)
    score = score + emission_scores.sum(1)
    if seq_len > 1:
        pair_index = tags[:, :-1] * num_tags + tags[:, 1:]  # shape: (N, L - 1)
        flat_transitions = transitions.reshape(transitions.shape[0], -1).expand(rows, -1)  # shape: (N, T * T)
        score = score + (flat_transitions.gather(1, pair_index) * weights[:, 1:]).sum(1)
    lengths = mask.sum(1)
    last_tags = tags.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)  # shape: (N,)
    score = score + end.expand(rows, num_tags).gather(1, last_tags[:, None]).squeeze(1) * (lengths > 0)
    return score


def _forward_algorithm(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
    keep_alphas: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log partition function (N,) and, with keep_alphas, the forward log-scores (N, L, T), emission at t
    included."""
    rows, seq_len, num_tags = emissions.shape
    if seq_len == 0:
        return emissions.new_zeros(rows), emissions.new_zeros(rows, 0, num_tags)
    incoming = transitions.transpose(1, 2)  # shape: (N|1, to, from): reduce over the contiguous last dim
    alpha = start + emissions[:, 0]  # shape: (N, T)
    alphas = [alpha]
    for t in range(1, seq_len):
        scores = alpha[:, None, :] + incoming  # shape: (N, to, from)
        next_alpha = torch.logsumexp(scores, dim=2) + emissions[:, t]  # shape: (N, T)
        alpha = torch.where(mask[:, t, None], next_alpha, alpha)
        if keep_alphas:
            alphas.append(alpha)
    log_partition = torch.logsumexp(alpha + end, dim=1)  # shape: (N,)
    log_partition = torch.where(mask[:, 0], log_partition, torch.zeros_like(log_partition))
    return log_partition, (torch.stack(alphas, dim=1) if keep_alphas else None)  # shape: (N, L, T)


def _backward_algorithm(
    emissions: torch.Tensor, mask: torch.Tensor, transitions: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """Backward log-scores betas (N, L, T): everything after position t (emission at t excluded)."""
    rows, seq_len, num_tags = emissions.shape
    final = end.expand(rows, num_tags)
    beta = final
    betas = [beta]
    for t in range(seq_len - 1, 0, -1):
        scores = transitions + (emissions[:, t] + beta)[:, None, :]  # shape: (N, from, to)
        previous = torch.logsumexp(scores, dim=2)  # shape: (N, T)
        beta = torch.where(mask[:, t, None], previous, final)
        betas.append(beta)
    return torch.stack(betas[::-1], dim=1)  # shape: (N, L, T)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Mächler 2012); at least FORBIDDEN_SCORE."""
    x = x.clamp(max=0.0)
    near_zero = x > -math.log(2.0)
    value = torch.where(near_zero, (-torch.expm1(x)).log(), (-x.exp()).log1p())
    return value.clamp(min=FORBIDDEN_SCORE)


# Span confidences are built from three log-probabilities per word and channel, about the word's decoded tag
# t_k (the tag before it t_{k-1}, the tag after it y_{k+1}):
SPAN_OPEN = 0  # log P(y_k = t_k, and y_{k-1} does not continue into it): an entity can start here
SPAN_CONTINUE = 1  # log P(y_k = t_k | y_{k-1} = t_{k-1}): the entity goes on through this word
SPAN_CLOSE = 2  # log P(y_{k+1} does not continue t_k | y_k = t_k): the entity ends at this word


def _path_confidences(
    emissions: torch.Tensor,
    tags: torch.Tensor,
    mask: torch.Tensor,
    transitions: torch.Tensor,
    log_partition: torch.Tensor,
    alphas: torch.Tensor,
    betas: torch.Tensor,
    continues: torch.Tensor,
) -> torch.Tensor:
    """The CRF posterior's SPAN_OPEN / SPAN_CONTINUE / SPAN_CLOSE log-probabilities of a tag path.

    With forward scores alpha (emission included) and backward scores beta, ``P(y_k = a) = exp(alpha_k(a) +
    beta_k(a) - log Z)`` and ``P(y_{k-1} = a, y_k = b) = exp(alpha_{k-1}(a) + T[a, b] + e_k(b) + beta_k(b) -
    log Z)``; a conditional is a pair over a single. At the first position SPAN_CONTINUE is the marginal, at
    the last SPAN_CLOSE is 0 (nothing follows). By the Markov property, the posterior probability that words
    i..j hold exactly the entity of the path is ``exp(open_i + continue_{i+1} + ... + continue_j +
    close_j)``.

    Shapes: emissions (N, L, T); tags, mask (N, L); transitions (N|1, T, T) with the constraints applied;
    log_partition (N,); alphas, betas (N, L, T) from the forward and backward algorithms; continues (T, T)
    bool (``entity_continuations``). Returns (N, L, 3); 0 at padding.
    """
    rows, seq_len, num_tags = emissions.shape
    tag_index = tags[..., None]  # shape: (N, L, 1)
    unary = (alphas + betas).gather(2, tag_index).squeeze(2) - log_partition[:, None]  # shape: (N, L)
    opening, continuing, closing = unary.clone(), unary.clone(), torch.zeros_like(unary)
    if seq_len > 1:
        full = transitions.expand(rows, num_tags, num_tags)  # shape: (N, from, to)
        previous, current = tags[:, :-1], tags[:, 1:]  # shape: (N, L - 1) each
        into = full.transpose(1, 2).gather(1, current[..., None].expand(-1, -1, num_tags))  # (N, L-1, from)
        arriving = (emissions[:, 1:] + betas[:, 1:]).gather(2, current[..., None]).squeeze(2)  # (N, L - 1)
        from_each = alphas[:, :-1] + into  # shape: (N, L - 1, T): alpha_{k-1}(a) + T[a, t_k]
        pair = from_each.gather(2, previous[..., None]).squeeze(2) + arriving - log_partition[:, None]
        continuing[:, 1:] = pair - unary[:, :-1]
        into_entity = continues.transpose(0, 1)[current]  # shape: (N, L - 1, T): a continues into t_k
        entering = torch.logsumexp(from_each.masked_fill(~into_entity, -math.inf), dim=2)  # shape: (N, L - 1)
        entering = entering + arriving - log_partition[:, None]  # log P(y_{k-1} continues into y_k = t_k)
        opening[:, 1:] = unary[:, 1:] + _log1mexp(entering - unary[:, 1:])
        out_of = full.gather(1, previous[..., None].expand(-1, -1, num_tags))  # shape: (N, L - 1, to)
        onward = out_of + emissions[:, 1:] + betas[:, 1:]  # shape: (N, L - 1, T): T[t_k, b] + e(b) + beta(b)
        onward = onward.masked_fill(~continues[previous], -math.inf)  # only the tags that continue t_k
        leaving = torch.logsumexp(onward, dim=2) - betas[:, :-1].gather(2, previous[..., None]).squeeze(2)
        closing[:, :-1] = torch.where(mask[:, 1:], _log1mexp(leaving), torch.zeros_like(leaving))
    confidences = torch.stack([opening, continuing, closing], dim=-1)  # shape: (N, L, 3)
    return torch.where(mask[..., None], confidences, torch.zeros_like(confidences))


def _viterbi(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """Best paths (N, L); positions past a sequence's end repeat its last tag.

    At padded steps the back-pointers are the identity, so one backtracking pass over all rows at once
    recovers every path (no Python loop over rows).
    """
    rows, seq_len, num_tags = emissions.shape
    if seq_len == 0:
        return torch.zeros(rows, 0, dtype=torch.long, device=emissions.device)
    incoming = transitions.transpose(1, 2)  # shape: (N|1, to, from)
    identity = torch.arange(num_tags, device=emissions.device).expand(rows, num_tags)  # shape: (N, T)
    score = start + emissions[:, 0]  # shape: (N, T)
    history = []
    for t in range(1, seq_len):
        best, best_from = (score[:, None, :] + incoming).max(dim=2)  # shape: (N, to)
        step = mask[:, t, None]
        score = torch.where(step, best + emissions[:, t], score)
        history.append(torch.where(step, best_from, identity))
    tags = torch.empty(rows, seq_len, dtype=torch.long, device=emissions.device)
    last = (score + end).argmax(dim=1, keepdim=True)  # shape: (N, 1)
    tags[:, seq_len - 1 :] = last
    for t in range(seq_len - 1, 0, -1):
        last = history[t - 1].gather(1, last)  # shape: (N, 1)
        tags[:, t - 1 : t] = last
    return tags


class CRF(nn.Module):
    """Linear-chain CRF, vectorised over batch (and channels) and tags; pytorch-crf's parameters and layout.

    ``transitions[i, j]`` scores the move from tag i to tag j. Forbidden moves (``allowed_*``) get
    FORBIDDEN_SCORE added on the fly: they are masked, never learned. Sequences are batch-first and left
    aligned: ``mask[b, :n_b]`` is True, the rest False; an empty sequence (n_b = 0) is allowed.

    With ``num_channels`` set, the CRF holds one independent chain per channel (multi-label: one per entity
    type): parameters get a leading channel dimension, emissions have shape (batch, seq_len, channels, tags),
    tags (batch, seq_len, channels), and all channels run as one batch.

    Args:
        num_tags: number of tags.
        allowed_start: (num_tags,) whether a sequence may start with each tag; None allows all.
        allowed_transitions: (num_tags, num_tags) whether tag i may be followed by tag j; None allows all.
        allowed_end: (num_tags,) whether a sequence may end with each tag; None allows all.
        num_channels: None for one chain; else the number of independent chains.
    """

    def __init__(
        self,
        num_tags: int,
        allowed_start: list[bool] | None = None,
        allowed_transitions: list[list[bool]] | None = None,
        allowed_end: list[bool] | None = None,
        num_channels: int | None = None,
    ) -> None:
        super().__init__()
        if num_tags <= 0:
            raise ValueError(f"invalid number of tags: {num_tags}")
        if num_channels is not None and num_channels <= 0:
            raise ValueError(f"invalid number of channels: {num_channels}")
        self.num_tags = num_tags
        self.num_channels = num_channels
        lead = () if num_channels is None else (num_channels,)
        self.start_transitions = nn.Parameter(torch.empty(*lead, num_tags))
        self.end_transitions = nn.Parameter(torch.empty(*lead, num_tags))
        self.transitions = nn.Parameter(torch.empty(*lead, num_tags, num_tags))
        # Constraints are plain Python (not buffers): they follow from the labels, never from a checkpoint, so
        # a pytorch-crf state dict loads as is and meta-device loading has nothing to materialise.
        for name, value, shape in (
            ("allowed_start", allowed_start, [num_tags]),
            ("allowed_transitions", allowed_transitions, [num_tags, num_tags]),
            ("allowed_end", allowed_end, [num_tags]),
        ):
            if value is not None and list(torch.tensor(value).shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {list(torch.tensor(value).shape)}")
        self.allowed_start = allowed_start
        self.allowed_transitions = allowed_transitions
        self.allowed_end = allowed_end
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-0.1, 0.1) as in pytorch-crf, through ``nn.init`` (transformers skips loaded tensors)."""
        for parameter in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def extra_repr(self) -> str:
        constrained = self.allowed_transitions is not None or self.allowed_start is not None
        return f"num_tags={self.num_tags}, num_channels={self.num_channels}, constrained={constrained}"

    # -- public entry points ---------------------------------------------------------------------------------

    def nll(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor | None = None,
        reduction: str = "token_mean",
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Negative log-likelihood of the tag sequences.

        Args:
            emissions: (batch, seq_len, num_tags), or (batch, seq_len, num_channels, num_tags) with channels.
            tags: (batch, seq_len) tag ids, or (batch, seq_len, num_channels); ignored at masked positions.
            mask: (batch, seq_len) bool, left aligned; None means every position is real.
            reduction: "token_mean" (sum over sequences / number of real tokens [x channels]), "mean" (over
                sequences), "sum", or "none" (per sequence: (batch,) or (batch, num_channels)).
            temperature: every score (emissions, transitions) divided by it (``posteriors``); 1 in training.

        Returns:
            a scalar, or the unreduced tensor for "none".
        """
        if reduction not in CRF_REDUCTIONS:
            raise ValueError(f"invalid reduction: {reduction!r}; expected one of {CRF_REDUCTIONS}")
        mask = self._check(emissions, mask)
        if tags.shape != emissions.shape[:-1]:
            raise ValueError(f"tags must have shape {tuple(emissions.shape[:-1])}, got {tuple(tags.shape)}")
        flat_emissions, flat_mask, start, transitions, end = self._flatten(emissions, mask, temperature)
        flat_tags = self._fold_channels(tags)
        flat_tags = torch.where(flat_mask, flat_tags, torch.zeros_like(flat_tags))  # -100 etc. at padding
        if ((flat_tags < 0) | (flat_tags >= self.num_tags)).any():
            bad = flat_tags[(flat_tags < 0) | (flat_tags >= self.num_tags)]
            raise ValueError(f"tags must lie in [0, {self.num_tags}) at real positions; got "
                             f"{bad[:5].tolist()}")
        if flat_mask.shape[1] == 0:  # no position in any sequence: NLL 0, kept on the graph for backward()
            nll = flat_emissions.sum(dim=(1, 2))  # shape: (rows,)
        else:
            gold = _path_score(flat_emissions, flat_tags, flat_mask, start, transitions, end)  # (rows,)
            log_partition = _forward_algorithm(flat_emissions, flat_mask, start, transitions, end)[0]
            nll = log_partition - gold  # shape: (rows,)
        if self.num_channels is not None:
            nll = nll.view(emissions.shape[0], self.num_channels)  # shape: (batch, num_channels)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        return nll.sum() / flat_mask.sum().clamp(min=1)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list:
        """Viterbi: the best tag sequence of each example.

        Args:
            emissions: (batch, seq_len, num_tags), or (batch, seq_len, num_channels, num_tags) with channels.
            mask: (batch, seq_len) bool, left aligned; None means every position is real.

        Returns:
            list (batch) of lists of tag ids, one per real position; with channels, list (batch) of lists
            (channel) of lists of tag ids.
        """
        mask = self._check(emissions, mask)
        paths = self._viterbi_rows(emissions, mask)  # shape: (batch [* channels], seq_len)
        lengths = mask.sum(1).tolist()
        rows = paths.tolist()
        if self.num_channels is None:
            return [row[:length] for row, length in zip(rows, lengths, strict=True)]
        channels = self.num_channels
        return [
            [rows[b * channels + c][:length] for c in range(channels)] for b, length in enumerate(lengths)
        ]

    def viterbi_tags(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Viterbi paths as a padded tensor (what ``decode`` returns, before conversion to lists).

        Returns:
            long tensor (batch, seq_len), or (batch, seq_len, num_channels); values at padding are arbitrary.
        """
        mask = self._check(emissions, mask)
        paths = self._viterbi_rows(emissions, mask)  # shape: (batch [* channels], seq_len)
        return self._unfold_channels(paths, emissions.shape[0])

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior probability of each tag at each position (forward-backward).

        Args:
            emissions: (batch, seq_len, num_tags), or (batch, seq_len, num_channels, num_tags) with channels.
            mask: (batch, seq_len) bool, left aligned; None means every position is real.

        Returns:
            the shape of ``emissions``: probabilities summing to 1 over tags at real positions, 0 at padding.
        """
        return self.posteriors(emissions, mask)[0]

    def posteriors(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor | None = None,
        tags: torch.Tensor | None = None,
        continues: list[list[bool]] | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Marginals and, for a tag path, its span confidences, from one forward-backward pass.

        ``temperature`` T divides every score (emissions, start, transitions, end): the posteriors of the
        distribution ``p(y)^(1/T) / Z_T``. Its most likely path is the Viterbi path whatever T (a path's score
        is only divided by T), so a temperature fitted on dev (``confidence_temperature``) calibrates the
        confidences without moving a single decision.

        Args:
            emissions: (batch, seq_len, num_tags), or (batch, seq_len, num_channels, num_tags) with channels.
            mask: (batch, seq_len) bool, left aligned; None means every position is real.
            tags: a path, (batch, seq_len) or (batch, seq_len, num_channels) (the Viterbi path, usually), or
                None.
            continues: (num_tags, num_tags) ``entity_continuations`` of the tags (needed with ``tags``).
            temperature: > 0; 1: the model's own posteriors.

        Returns:
            (marginals: the shape of ``emissions``, probabilities summing to 1 over tags at real positions, 0
            at padding; confidences: None without ``tags``, else (batch, seq_len[, num_channels], 3): the
            SPAN_OPEN, SPAN_CONTINUE and SPAN_CLOSE log-probabilities of the path at each word
            (``_path_confidences``), 0 at padding).
        """
        mask = self._check(emissions, mask)
        flat_emissions, flat_mask, start, transitions, end = self._flatten(emissions, mask, temperature)
        log_partition, alphas = _forward_algorithm(flat_emissions, flat_mask, start, transitions, end,
                                                   keep_alphas=True)
        betas = _backward_algorithm(flat_emissions, flat_mask, transitions, end)
        log_marginals = alphas + betas - log_partition[:, None, None]  # shape: (rows, seq_len, num_tags)
        marginals = self._unfold_channels(log_marginals.exp() * flat_mask[..., None], emissions.shape[0])
        if tags is None:
            return marginals, None
        if continues is None:
            raise ValueError("posteriors() with tags needs continues (entity_continuations of the tags)")
        continue_table = torch.tensor(continues, dtype=torch.bool, device=emissions.device)  # (T, T)
        confidences = _path_confidences(flat_emissions, self._fold_channels(tags), flat_mask, transitions,
                                        log_partition, alphas, betas, continue_table)  # shape: (rows, L, 3)
        return marginals, self._unfold_channels(confidences, emissions.shape[0])

    # -- helpers ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _viterbi_rows(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        flat_emissions, flat_mask, start, transitions, end = self._flatten(emissions.detach(), mask)
        return _viterbi(flat_emissions, flat_mask, start, transitions, end)  # shape: (rows, seq_len)

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        expected_dim = 3 if self.num_channels is None else 4
        if emissions.dim() != expected_dim:
            raise ValueError(f"emissions must have {expected_dim} dimensions, got shape "
                             f"{tuple(emissions.shape)}")
        if emissions.shape[-1] != self.num_tags:
            raise ValueError(f"expected last dimension of emissions is {self.num_tags}, got "
                             f"{emissions.shape[-1]}")
        if self.num_channels is not None and emissions.shape[2] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels in emissions, got {emissions.shape[2]}")
        if mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.bool()
        if mask.shape[1] > 1 and (mask[:, 1:] & ~mask[:, :-1]).any():
            bad = torch.nonzero((mask[:, 1:] & ~mask[:, :-1]).any(1)).flatten().tolist()
            raise ValueError(f"mask must be left aligned (no real position after padding); rows {bad[:5]} "
                             "are not")
        return mask

    def _fold_channels(self, tensor: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len, channels, ...) -> (batch * channels, seq_len, ...); identity without channels."""
        if self.num_channels is None:
            return tensor
        moved = tensor.transpose(1, 2)  # shape: (batch, channels, seq_len, ...)
        # explicit sizes, not -1: with no words (seq_len 0) a -1 would be ambiguous
        rows = moved.shape[0] * moved.shape[1]
        return moved.reshape(rows, *moved.shape[2:])  # shape: (batch * channels, seq_len, ...)

    def _unfold_channels(self, tensor: torch.Tensor, batch: int) -> torch.Tensor:
        """(batch * channels, seq_len, ...) -> (batch, seq_len, channels, ...); identity without channels."""
        if self.num_channels is None:
            return tensor
        return tensor.view(batch, self.num_channels, *tensor.shape[1:]).transpose(1, 2)

    def _flatten(self, emissions: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0):
        """Fold channels into rows; (emissions, mask, start, transitions, end) with the constraints applied,
        every score divided by ``temperature`` (``posteriors``).

        Parameters come back with a leading dimension that broadcasts against the rows: 1, or rows.
        """
        start, transitions, end = self.start_transitions, self.transitions, self.end_transitions
        device, dtype = transitions.device, transitions.dtype
        if self.allowed_start is not None:
            start = start + _penalty(self.allowed_start, device, dtype)
        if self.allowed_transitions is not None:
            transitions = transitions + _penalty(self.allowed_transitions, device, dtype)
        if self.allowed_end is not None:
            end = end + _penalty(self.allowed_end, device, dtype)
        if temperature != 1.0:
            emissions, start, transitions, end = (value / temperature
                                                  for value in (emissions, start, transitions, end))
        if self.num_channels is None:
            # shape: (tags,) -> (1, tags); (tags, tags) -> (1, tags, tags)
            return emissions, mask, start[None], transitions[None], end[None]
        batch = emissions.shape[0]
        flat_mask = mask[:, None, :].expand(batch, self.num_channels, mask.shape[1])  # (batch, C, seq_len)
        flat_mask = flat_mask.reshape(batch * self.num_channels, mask.shape[1])  # shape: (batch * C, seq_len)

        def rows(parameter: torch.Tensor) -> torch.Tensor:
            expanded = parameter[None].expand(batch, *parameter.shape)  # shape: (batch, C, ...)
            return expanded.reshape(batch * self.num_channels, *parameter.shape[1:])  # (batch * C, ...)

        return self._fold_channels(emissions), flat_mask, rows(start), rows(transitions), rows(end)


def scheme_viterbi(
    scores: torch.Tensor, mask: torch.Tensor, constraints: tuple[list[bool], list[list[bool]], list[bool]]
) -> torch.Tensor:
    """Best tag path under the tag scheme's constraints alone (no learned transitions): the highest sum of
    ``scores`` over the paths ``transition_constraints`` allows.

    Args:
        scores: (batch, seq_len, tags), or (batch, seq_len, channels, tags) for one chain per channel.
        mask: (batch, seq_len) bool, left aligned.
        constraints: (start_allowed, allowed, end_allowed) as ``transition_constraints`` returns them.

    Returns:
        long tensor of the shape of ``scores`` without its last dimension; values at padding are arbitrary.
    """
    start, transitions, end = (_penalty(a, scores.device, scores.dtype)[None] for a in constraints)
    if scores.dim() == 3:
        return _viterbi(scores, mask, start, transitions, end)
    batch, seq_len, channels, num_tags = scores.shape
    rows = scores.transpose(1, 2).reshape(batch * channels, seq_len, num_tags)
    row_mask = mask[:, None].expand(batch, channels, seq_len).reshape(batch * channels, seq_len)
    paths = _viterbi(rows, row_mask, start, transitions, end)  # shape: (batch * channels, seq_len)
    return paths.view(batch, channels, seq_len).transpose(1, 2)


# ------------------------------------------------------------------------------------------------------------
# 4. Heads: hidden states (batch, seq_len, hidden) -> scores (batch, seq_len, num_outputs), chosen by name
# ------------------------------------------------------------------------------------------------------------
#
# Every head is ``__init__(input_size, num_outputs, config)`` and ``forward(hidden_states, attention_mask)``,
# reads its settings from the config (HEAD_SETTINGS, below, says which) and ends in a linear layer named
# ``classifier`` (whose bias starts at the tag priors). Sequence heads see the real tokens only: padding is
# moved out first.


def compact_real_tokens(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The real tokens of each row moved to the front, in order (sequence heads then never see padding).

    Args:
        hidden_states: (batch, seq_len, size).
        attention_mask: (batch, seq_len), 1 for real tokens.

    Returns:
        (tokens (batch, max_real, size), left-aligned mask (batch, max_real) bool).
    """
    positions, token_mask = gather_positions(attention_mask.bool())  # shape: (batch, max_real)
    if positions.shape[1] == 0:  # no real token in the batch: one masked slot keeps every head's shapes valid
        positions = positions.new_zeros(len(positions), 1)
        token_mask = token_mask.new_zeros(len(token_mask), 1)
    return gather_rows(hidden_states, positions), token_mask


def expand_real_tokens(features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Undo ``compact_real_tokens``: (batch, max_real, size) -> (batch, seq_len, size), zeros at padding."""
    real = attention_mask.bool()
    slot = (real.long().cumsum(1) - 1).clamp(min=0)  # shape: (batch, seq_len): rank among real tokens
    expanded = gather_rows(features, slot)  # shape: (batch, seq_len, size)
    return torch.where(real[..., None], expanded, torch.zeros_like(expanded))


class HeadInput(nn.Module):
    """What the head reads: the backbone's top layer, or its last ``num_layers_to_use`` layers concatenated
    ("concat") or mixed with learned scalar weights ("mix": softmax-normalised weights times a learned gain);
    with ``use_combined``, each token's vector followed by its sequence's first-token ([CLS]) vector.

    Args:
        backbone_config: the backbone's config (its hidden size and number of layers).
        config: the model config.
    """

    def __init__(self, backbone_config: PretrainedConfig, config: PretrainedConfig) -> None:
        super().__init__()
        self.num_layers = config.num_layers_to_use
        self.layer_combination = config.layer_combination
        self.use_combined = config.use_combined
        available = int(getattr(backbone_config, "num_hidden_layers", 0) or 0) + 1  # embeddings + every layer
        if self.num_layers > available > 1:
            raise ValueError(f"num_layers_to_use={self.num_layers}, but the backbone has {available} "
                             "hidden states "
                             f"(embeddings + {available - 1} layers)")
        if self.num_layers > 1 and self.layer_combination == "mix":
            self.layer_weights = nn.Parameter(torch.zeros(self.num_layers))  # softmax: equal weights at first
            self.layer_gain = nn.Parameter(torch.ones(()))
        layers = self.num_layers if self.layer_combination == "concat" else 1
        self.output_size = backbone_config.hidden_size * layers * (2 if self.use_combined else 1)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Args:
            hidden_states: ``backbone_features``: (batch, seq_len, hidden), or (batch, seq_len, num_layers,
                hidden) when num_layers_to_use > 1.
            attention_mask: (batch, seq_len).

        Returns:
            (batch, seq_len, output_size).
        """
        features = hidden_states
        if self.num_layers > 1:
            if hidden_states.dim() != 4 or hidden_states.shape[2] != self.num_layers:
                raise ValueError(f"expected hidden states (batch, seq_len, {self.num_layers}, hidden), "
                                 f"got {tuple(hidden_states.shape)}")
            if self.layer_combination == "mix":
                weights = self.layer_weights.softmax(0).to(hidden_states.dtype)  # shape: (num_layers,)
                features = self.layer_gain * (hidden_states * weights[:, None]).sum(2)  # (b, seq, hidden)
            else:
                features = hidden_states.flatten(2)  # shape: (batch, seq_len, num_layers * hidden)
        if self.use_combined:
            first = features[:, :1].expand_as(features)  # shape: (batch, seq_len, size)
            features = torch.cat([features, first], dim=-1)  # shape: (batch, seq_len, 2 * size)
        return features


class LinearHead(nn.Module):
    """Dropout and one linear layer."""

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(input_size, num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden_states))


class MLPHead(nn.Module):
    """(dropout, linear, activation) per ``classifier_hidden_layers``, then dropout and a linear output."""

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for size in config.classifier_hidden_layers:
            layers += [nn.Dropout(config.classifier_dropout), nn.Linear(input_size, size)]
            layers.append(ACT2FN[config.classifier_activation])
            input_size = size
        self.hidden = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(input_size, num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.hidden(hidden_states)))


class BiLSTMHead(nn.Module):
    """A bidirectional LSTM over the real tokens (packed: padding never enters it), dropout, a linear layer.

    Uses ``lstm_hidden_size`` (per direction), ``lstm_num_layers`` and ``lstm_dropout`` (between LSTM layers).
    """

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.lstm = nn.LSTM(
            input_size, config.lstm_hidden_size, num_layers=config.lstm_num_layers, batch_first=True,
            bidirectional=True, dropout=config.lstm_dropout if config.lstm_num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(2 * config.lstm_hidden_size, num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens, token_mask = compact_real_tokens(self.dropout(hidden_states), attention_mask)  # (b, n, input)
        lengths = token_mask.sum(1).clamp(min=1).cpu()  # shape: (batch,); an empty row runs on one pad
        packed = nn.utils.rnn.pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=tokens.shape[1])
        # output shape: (batch, n, 2 * lstm_hidden_size)
        return self.classifier(self.dropout(expand_real_tokens(output, attention_mask)))


class CNNHead(nn.Module):
    """Parallel 1-D convolutions over the real tokens (``cnn_kernel_sizes``, ``cnn_num_filters`` each), padded
    to keep the length, activation, then dropout and a linear layer over the concatenated filters.

    Padding tokens are removed first and the convolution pads with zeros, so a real token never sees padding.
    """

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig) -> None:
        super().__init__()
        self.kernel_sizes = [int(size) for size in config.cnn_kernel_sizes]
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.convolutions = nn.ModuleList(
            nn.Conv1d(input_size, config.cnn_num_filters, size) for size in self.kernel_sizes
        )
        self.activation = ACT2FN[config.classifier_activation]
        self.classifier = nn.Linear(config.cnn_num_filters * len(self.kernel_sizes), num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens, token_mask = compact_real_tokens(self.dropout(hidden_states), attention_mask)  # (b, n, input)
        tokens = (tokens * token_mask[..., None]).transpose(1, 2)  # shape: (batch, input, n)
        features = [
            self.activation(convolution(nn.functional.pad(tokens, ((size - 1) // 2, size // 2))))  # (b, f, n)
            for size, convolution in zip(self.kernel_sizes, self.convolutions, strict=True)
        ]
        features = torch.cat(features, dim=1).transpose(1, 2)  # shape: (batch, n, filters * kernels)
        return self.classifier(self.dropout(expand_real_tokens(features, attention_mask)))


class AttentionHead(nn.Module):
    """A projection to ``attention_hidden_size``, ``attention_num_layers`` transformer blocks (multi-head
    self-attention with padded keys masked, layer norm, GELU MLP), then dropout and a linear layer."""

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig) -> None:
        super().__init__()
        size = config.attention_hidden_size
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.projection = nn.Linear(input_size, size)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(size, config.attention_num_heads, dim_feedforward=4 * size,
                                       dropout=config.classifier_dropout, activation="gelu", batch_first=True)
            for _ in range(config.attention_num_layers)
        )
        self.classifier = nn.Linear(size, num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens, token_mask = compact_real_tokens(self.dropout(hidden_states), attention_mask)  # (b, n, input)
        features = self.projection(tokens)  # shape: (batch, n, attention_hidden_size)
        padding = ~token_mask
        padding[:, :1] = False  # an empty row attends to its (ignored) first slot instead of to nothing (NaN)
        for block in self.blocks:
            features = block(features, src_key_padding_mask=padding)
        return self.classifier(self.dropout(expand_real_tokens(features, attention_mask)))


# Scaling (low-pass) filters h of the Daubechies wavelets (haar = db1): dbN has 2N taps summing to sqrt(2) and
# N vanishing moments. These are the doubles that Daubechies' spectral factorisation gives (the values earlier
# versions computed when loading, so that exported wavelet heads compute the same to the bit); they agree with
# the closed forms and published tables to 1e-15. tests/test_modeling_heads.py derives and checks them.
WAVELET_FILTERS: dict[str, tuple[float, ...]] = {
    "haar": (0.7071067811865476, 0.7071067811865476),
    "db2": (0.48296291314453427, 0.836516303737808, 0.22414386804201333, -0.12940952255126045),
    "db4": (0.23037781330889653, 0.7148465705529158, 0.630880767929859, -0.027983769416859854,
            -0.18703481171909309, 0.030841381835560792, 0.03288301166688521, -0.010597401785069035),
}
WAVELET_NAMES = tuple(WAVELET_FILTERS)
WAVELET_LEVELS = 6  # wavelet tables hold 2**6 points per unit of support


def wavelet_filter(name: str) -> tuple[float, ...]:
    """Scaling filter of a wavelet by name ("haar", "db2", "db4"): ``WAVELET_FILTERS``."""
    if name not in WAVELET_FILTERS:
        raise ValueError(f"unknown wavelet {name!r}; expected one of {sorted(WAVELET_FILTERS)}")
    return WAVELET_FILTERS[name]


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """x with matrix @ x = vector (Gauss-Jordan with partial pivoting; small systems)."""
    size = len(vector)
    rows = [[*map(float, row), float(value)] for row, value in zip(matrix, vector, strict=True)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(size):
            if r != col and rows[r][col] != 0.0:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col], strict=True)]
    return [rows[i][size] / rows[i][i] for i in range(size)]


@functools.cache
def wavelet_functions(name: str, levels: int = WAVELET_LEVELS) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scaling function phi and wavelet psi of ``name`` at x = m / 2**levels over their support [0, L - 1].

    The cascade algorithm from exact values: phi at the integers solves phi(n) = sqrt(2) sum_k h_k phi(2n - k)
    with sum phi(n) = 1 (Haar: the box, phi(0) = 1, phi(1) = 0); each level halves the spacing with the same
    two-scale relation, and psi(x) = sqrt(2) sum_k g_k phi(2x - k) with g_k = (-1)^k h_{L-1-k}. Pure Python,
    so it runs the same inside transformers' meta-device model construction.

    Returns:
        (phi, psi), each (L - 1) * 2**levels + 1 values.
    """
    h = wavelet_filter(name)
    length = len(h)
    root2 = math.sqrt(2)
    if length == 2:
        phi = [1.0, 0.0]
    else:
        equations = [[root2 * h[2 * n - j] if 0 <= 2 * n - j < length else 0.0 for j in range(length)]
                     for n in range(length)]
        for n in range(length):
            equations[n][n] -= 1.0
        equations[-1] = [1.0] * length  # the rows of (M - I) sum to zero: replace one by the normalisation
        phi = _solve(equations, [0.0] * (length - 1) + [1.0])
    for level in range(1, levels + 1):
        step = 2 ** (level - 1)  # grid points per unit at the previous level
        phi = [root2 * sum(c * phi[m - k * step] for k, c in enumerate(h) if 0 <= m - k * step < len(phi))
               for m in range((length - 1) * 2**level + 1)]
    g = [(-1) ** k * h[length - 1 - k] for k in range(length)]
    unit = 2**levels
    psi = [root2 * sum(c * phi[2 * m - k * unit] for k, c in enumerate(g) if 0 <= 2 * m - k * unit < len(phi))
           for m in range(len(phi))]
    return tuple(phi), tuple(psi)


class KANHead(nn.Module):
    """Kolmogorov–Arnold head (Liu et al. 2024, "KAN"): each input feature x_i passes through a learnable
    function, phi_i(x_i) = w_i x_i + (1/K) sum_k c_ik b_k(x_i), summed into every output. The first term is
    KAN's base branch, here linear (``residual``: the linear head itself); the second is the mean of the
    ``num_basis`` (K) basis functions b_k of the layer-normed feature, with learned coefficients c_ik
    (``classifier``). Subclasses define the basis.

    The basis term starts at zero: a fresh KAN head computes what a fresh linear head computes, and its
    functions grow from there. Started at random instead (nn.Linear's init), it added 3-8 times as much noise
    to the logits as the linear path's whole output, and sent gradients through the basis' derivatives into
    the backbone; summed over the K functions instead of averaged, each Adam step (every weight moves by about
    the learning rate) moved it K times as far. Together they cost the KAN heads 20 F1 on NCBI-disease at the
    head comparison's budget (docs/benchmarks.md). Models saved with ``config_version`` 1 sum the basis, as
    they were trained to.

    Args:
        input_size, num_outputs, config: as for every head.
        num_basis: basis functions per input feature.
    """

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig, num_basis: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.norm = nn.LayerNorm(input_size)
        self.residual = nn.Linear(input_size, num_outputs)
        self.classifier = nn.Linear(input_size * num_basis, num_outputs)  # the basis functions' weights
        self.uses_basis_mean = config.config_version >= 2  # version 1: the sum, started at random
        self.basis_scale = 1.0 / num_basis if self.uses_basis_mean else 1.0

    def basis(self, features: torch.Tensor) -> torch.Tensor:
        """Basis functions of each feature: (..., input_size) -> (..., input_size, num_basis)."""
        raise NotImplementedError

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.dropout(hidden_states)
        values = self.basis(self.norm(features)) * self.basis_scale  # shape: (batch, seq_len, input, basis)
        return self.residual(features) + self.classifier(values.flatten(-2))  # shape: (b, seq_len, outputs)


class FourierKANHead(KANHead):
    """KAN head with a Fourier basis: cos(f x) and sin(f x) for ``num_frequencies`` learnable frequencies per
    input feature (starting at 1, 2, ..., num_frequencies)."""

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig) -> None:
        super().__init__(input_size, num_outputs, config, num_basis=2 * config.num_frequencies)
        self.num_frequencies = config.num_frequencies
        self.frequency_offsets = nn.Parameter(torch.zeros(input_size, config.num_frequencies))  # learned

    def basis(self, features: torch.Tensor) -> torch.Tensor:
        start = torch.arange(1, self.num_frequencies + 1, device=features.device, dtype=features.dtype)
        angles = features[..., None] * (start + self.frequency_offsets)  # shape: (..., input, frequencies)
        return torch.cat([angles.cos(), angles.sin()], dim=-1)  # shape: (..., input_size, 2 * frequencies)


class WaveletKANHead(KANHead):
    """KAN head with a wavelet basis: ``num_wavelets`` mother wavelets psi((x - t) / s) per input feature,
    each with a learnable translation t (starting evenly over [-2, 2]) and scale s.

    ``wavelet_type`` is "haar", "db2", "db4", or "mixed" (the three in turn). A wavelet is its tabulated
    function (``wavelet_functions``, from the filter coefficients by the cascade algorithm), linearly
    interpolated, its support stretched over [t - s, t + s].
    """

    def __init__(self, input_size: int, num_outputs: int, config: PretrainedConfig) -> None:
        super().__init__(input_size, num_outputs, config, num_basis=config.num_wavelets)
        names = WAVELET_NAMES if config.wavelet_type == "mixed" else (config.wavelet_type,)
        count = config.num_wavelets
        self._kinds = [index % len(names) for index in range(count)]  # table row of each wavelet
        tables = [wavelet_functions(name, WAVELET_LEVELS)[1] for name in names]
        width = max(len(table) for table in tables)
        # Plain lists, not buffers: they follow from the config (like the CRF's constraints), never from
        # weights.
        self._table = [list(table) + [0.0] * (width - len(table)) for table in tables]
        self._support = [len(wavelet_filter(names[kind])) - 1 for kind in self._kinds]  # support, in units
        self._starts = [-2.0 + 4.0 * index / (count - 1) if count > 1 else 0.0 for index in range(count)]
        self._start_scale = min(2.0, 8.0 / count)
        self.translation_offsets = nn.Parameter(torch.zeros(input_size, count))  # learned: t = start + offset
        self.log_scales = nn.Parameter(torch.zeros(input_size, count))  # s = start scale * exp(log_scale)

    def basis(self, features: torch.Tensor) -> torch.Tensor:
        device, dtype = features.device, features.dtype
        table = torch.tensor(self._table, device=device, dtype=dtype)  # shape: (types, points)
        kinds = torch.tensor(self._kinds, device=device)  # shape: (wavelets,)
        last = torch.tensor(self._support, device=device, dtype=dtype) * 2**WAVELET_LEVELS  # last grid point
        starts = torch.tensor(self._starts, device=device, dtype=dtype)  # shape: (wavelets,)
        translations = starts + self.translation_offsets  # shape: (input_size, wavelets)
        scales = self._start_scale * self.log_scales.exp()  # shape: (input_size, wavelets)
        unit = (features[..., None] - translations) / scales  # shape: (..., input_size, wavelets); in [-1, 1]
        position = (unit + 1) / 2 * last  # in grid points of the table
        inside = (position >= 0) & (position <= last)
        position = torch.minimum(position.clamp(min=0), last)
        index = torch.minimum(position.floor(), last - 1).long()
        fraction = position - index
        flat = table.flatten()
        row = kinds * table.shape[1]  # shape: (wavelets,)
        values = flat[row + index] * (1 - fraction) + flat[row + index + 1] * fraction
        return values * inside  # shape: (..., input_size, wavelets)


# A head is chosen by name: __init__(input_size, num_outputs, config), forward(hidden_states, attention_mask).
TOKEN_HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead,
    "mlp": MLPHead,
    "bilstm": BiLSTMHead,
    "cnn": CNNHead,
    "attention": AttentionHead,
    "fourier_kan": FourierKANHead,
    "wavelet_kan": WaveletKANHead,
}


# ------------------------------------------------------------------------------------------------------------
# 5. Configuration: the head-settings table, then CardioNERConfig (backbone config embedded; nothing fetched)
# ------------------------------------------------------------------------------------------------------------


class HeadSetting(NamedTuple):
    """One row of HEAD_SETTINGS: a setting of the model that a user chooses.

    Attributes:
        default: the value when the setting is not given.
        type: ``bool``, ``int``, ``float``, ``str``, or ``tuple`` (of positive ints; stored as a list).
        help: one line: what the setting does.
        heads: the heads (keys of TOKEN_HEADS) that read it; () when every model does.
        choices: the values a ``str`` setting may take; () when any.
        bounds: (low, high) for a number: low <= value, and value < high unless high is None; None when any.
    """

    default: Any
    type: type
    help: str
    heads: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    bounds: tuple[float, float | None] | None = None


# Every setting of the model that a user chooses: name -> HeadSetting (default, type, help, heads, choices,
# bounds). CardioNERConfig takes each one as a keyword argument of the same name, with this default, converted
# to this type and checked against these choices and bounds (``check_head_setting``); a training
# configuration's model section and a command line can offer the same names, defaults, choices and help from
# this table.
HEAD_SETTINGS: dict[str, HeadSetting] = {
    "head": HeadSetting("linear", str, "token head", choices=tuple(TOKEN_HEADS)),
    "classifier_hidden_layers": HeadSetting(
        (512, 256), tuple, "hidden sizes of the mlp head", heads=("mlp",)),
    "classifier_activation": HeadSetting(
        "gelu", str, "activation of the mlp and cnn heads (a transformers name)", heads=("mlp", "cnn"),
        choices=tuple(sorted(ACT2FN))),
    "classifier_dropout": HeadSetting(0.1, float, "dropout before each head layer", bounds=(0, 1)),
    "num_layers_to_use": HeadSetting(
        1, int, "the head reads the backbone's last N hidden layers (1: the top one)", bounds=(1, None)),
    "layer_combination": HeadSetting(
        "concat", str, "how those N layers combine: concatenated, or mixed with learned scalar weights",
        choices=("concat", "mix")),
    "use_combined": HeadSetting(
        False, bool, "each token's vector followed by its sequence's first-token ([CLS]) vector"),
    "lstm_hidden_size": HeadSetting(
        256, int, "bilstm head: hidden size per direction", heads=("bilstm",), bounds=(1, None)),
    "lstm_num_layers": HeadSetting(
        1, int, "bilstm head: stacked LSTM layers", heads=("bilstm",), bounds=(1, None)),
    "lstm_dropout": HeadSetting(
        0.1, float, "bilstm head: dropout between LSTM layers (with lstm_num_layers > 1)", heads=("bilstm",),
        bounds=(0, 1)),
    "cnn_kernel_sizes": HeadSetting(
        (3, 4, 5), tuple, "cnn head: one same-length convolution per kernel size", heads=("cnn",)),
    "cnn_num_filters": HeadSetting(
        128, int, "cnn head: filters per kernel size", heads=("cnn",), bounds=(1, None)),
    "attention_hidden_size": HeadSetting(
        256, int, "attention head: width of its transformer blocks", heads=("attention",), bounds=(1, None)),
    "attention_num_heads": HeadSetting(
        4, int, "attention head: attention heads (must divide attention_hidden_size)", heads=("attention",),
        bounds=(1, None)),
    "attention_num_layers": HeadSetting(
        1, int, "attention head: transformer blocks", heads=("attention",), bounds=(1, None)),
    "num_frequencies": HeadSetting(
        8, int, "fourier_kan head: learnable sin/cos frequencies per input feature", heads=("fourier_kan",),
        bounds=(1, None)),
    "wavelet_type": HeadSetting(
        "mixed", str, "wavelet_kan head: the wavelet, or the three in turn (mixed)", heads=("wavelet_kan",),
        choices=(*WAVELET_NAMES, "mixed")),
    "num_wavelets": HeadSetting(
        8, int, "wavelet_kan head: wavelets (learnable scale and translation) per input feature",
        heads=("wavelet_kan",), bounds=(1, None)),
    "label_smoothing": HeadSetting(
        0.0, float, "softmax loss: label smoothing (not with a CRF or multi-label)", bounds=(0, 1)),
    "focal_gamma": HeadSetting(
        0.0, float, "softmax loss: focal loss exponent; 0 is plain cross-entropy (not with a CRF or "
        "multi-label)",
        bounds=(0, None)),
    "use_crf": HeadSetting(
        False, bool, "a CRF over word positions, trained with its NLL, decoded with Viterbi"),
    "crf_constraints": HeadSetting(
        True, bool, "the CRF never takes a move the tag scheme forbids (O->I-X, B-X->I-Y, start->I-X)"),
    "crf_reduction": HeadSetting(
        "token_mean", str, "how the CRF NLL is reduced: per word, per sequence, or summed",
        choices=("token_mean", "mean", "sum")),
    "constrained_decoding": HeadSetting(
        True, bool, "no CRF: decode the best path the tag scheme allows (Viterbi), not each word's argmax"),
    "freeze_backbone": HeadSetting(False, bool, "train only the head (and CRF)"),
}


def check_head_setting(name: str, value: Any) -> Any:
    """``value`` of the head setting ``name`` converted to its type; ValueError, naming the key and the value,
    when the table does not allow it."""
    setting = HEAD_SETTINGS[name]
    if setting.type is tuple:
        value = [int(item) for item in value]
        if any(item < 1 for item in value):
            raise ValueError(f"{name} must be positive integers, got {value}")
        return value
    value = setting.type(value)
    if setting.choices and value not in setting.choices:
        raise ValueError(f"invalid {name} {value!r}; expected one of {setting.choices}")
    if setting.bounds is not None:
        low, high = setting.bounds
        if value < low or (high is not None and value >= high):
            allowed = f">= {low}" if high is None else f"in [{low}, {high})"
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def _per_tag_values(values: list | None) -> list | None:
    """A per-label list of floats, or one such row per channel, as plain Python floats (None stays None)."""
    if values is None:
        return None
    return [[float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)
            for value in values]


def _flatten_values(values: list) -> list[float]:
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


CONFIG_VERSION = 2  # bump when the meaning of a config key changes; old keys keep loading
# 2: KAN heads average their basis functions and start them at zero (KANHead); version 1 summed them


class CardioNERConfig(PretrainedConfig):
    """Configuration of a cardioner token-classification model (backbone config embedded; nothing fetched).

    Args:
        backbone_config: the backbone's own config as a dict, ``model_type`` included.
        **settings: every setting of HEAD_SETTINGS by its name (head, use_crf, classifier_dropout, ...): the
            table gives each one's default, type, meaning and allowed values.
        channel_types: multi-label models only: the entity type of each channel (one O/B/I chain per type, in
            this order); id2label then holds the channels' typed tags ``O, B-T1, I-T1, B-T2, ...`` in order.
        thresholds: multi-label sigmoid model: each channel's decision threshold in (0, 1); None means 0.5.
        class_weights: per-label weights of the softmax cross-entropy, or None; multi-label sigmoid model: one
            row per channel of per-tag weights of the BCE (a word-channel's loss weighted by its gold tag).
        tag_priors: the frequency of each tag in the training data (same layout as ``class_weights``), or
            None. A fresh head starts with its output biases at these priors (log p for softmax and CRF
            scores, the log-odds for the multi-label sigmoid), so training begins from the tag distribution
            instead of a uniform guess (Lin et al. 2017, "Focal loss", §3.3); without it they start at 0. Only
            initialisation reads it: a loaded model keeps its trained biases.
        label_all_subwords: the softmax and sigmoid losses read every labelled subword (a CRF: word starts).
        confidence_temperature: T > 0 dividing the scores from which confidences are computed (softmax,
            sigmoids, the CRF's posteriors and the eval logits): fitted on dev by ``cardioner calibrate`` so
            that span confidences mean what they say; decisions never read it. 1.0: the model's own scores.
        cardioner_version: version of cardioner that wrote the model (set on export).
        config_version: version of this config's layout.
        **kwargs: PretrainedConfig arguments (id2label, label2id, ...).
    """

    model_type = "cardioner"

    def __init__(
        self,
        backbone_config: dict | None = None,
        *,
        channel_types: list[str] | None = None,
        thresholds: list[float] | None = None,
        class_weights: list | None = None,
        tag_priors: list | None = None,
        label_all_subwords: bool = False,
        confidence_temperature: float = 1.0,
        cardioner_version: str | None = None,
        config_version: int = CONFIG_VERSION,
        **kwargs,
    ) -> None:
        if backbone_config is not None and not isinstance(backbone_config, dict):
            backbone_config = backbone_config.to_dict()  # a PretrainedConfig
        if backbone_config is not None and "model_type" not in backbone_config:
            raise ValueError(f"backbone_config needs a 'model_type'; got keys {sorted(backbone_config)[:10]}")
        self.backbone_config = backbone_config
        for name, setting in HEAD_SETTINGS.items():
            setattr(self, name, check_head_setting(name, kwargs.pop(name, setting.default)))
        self._check_setting_combinations(channel_types)
        self.channel_types = None if channel_types is None else [str(t) for t in channel_types]
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        if self.thresholds is not None and not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie in (0, 1), got {self.thresholds}")
        self.class_weights = _per_tag_values(class_weights)  # per label; multi-label: one row per channel
        self.tag_priors = _per_tag_values(tag_priors)
        if self.tag_priors is not None and not all(0.0 < p < 1.0 for p in _flatten_values(self.tag_priors)):
            raise ValueError(f"tag_priors must lie in (0, 1), got {self.tag_priors}")
        self.label_all_subwords = bool(label_all_subwords)
        temperature = float(confidence_temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"confidence_temperature must be a finite number > 0, got "
                             f"{confidence_temperature}")
        self.confidence_temperature = temperature
        self.cardioner_version = cardioner_version
        self.config_version = int(config_version)
        super().__init__(**kwargs)
        if self.channel_types is not None:
            layout = TagLayout([self.id2label[index] for index in range(self.num_labels)], self.channel_types)
            if self.thresholds is not None and len(self.thresholds) != layout.num_channels:
                raise ValueError(f"{len(self.thresholds)} thresholds for {layout.num_channels} channels")
        for name in ("class_weights", "tag_priors"):
            values = getattr(self, name)
            if values is None:
                continue
            if self.channel_types is not None:
                shape = [len(row) if isinstance(row, list) else 0 for row in values]
                if shape != [layout.num_tags] * layout.num_channels:
                    raise ValueError(f"{name} must be {layout.num_channels} rows of {layout.num_tags} values "
                                     "(per "
                                     f"channel and tag), got {values}")
            elif len(values) != self.num_labels or any(isinstance(value, list) for value in values):
                raise ValueError(f"{name} has {len(values)} values for {self.num_labels} labels")

    def _check_setting_combinations(self, channel_types: list[str] | None) -> None:
        """The head settings that are each allowed but not together: ValueError naming them."""
        if not self.cnn_kernel_sizes:
            raise ValueError(f"cnn_kernel_sizes must be positive integers, got {self.cnn_kernel_sizes}")
        if self.attention_hidden_size % self.attention_num_heads:
            raise ValueError(f"attention_hidden_size ({self.attention_hidden_size}) must be a multiple of "
                             f"attention_num_heads ({self.attention_num_heads})")
        if (self.label_smoothing or self.focal_gamma) and (self.use_crf or channel_types is not None):
            raise ValueError(f"label_smoothing ({self.label_smoothing}) and focal_gamma ({self.focal_gamma}) "
                             "shape "
                             "the softmax loss; a CRF or multi-label model would ignore them: set them to 0")

    def build_backbone_config(self) -> PretrainedConfig:
        """The embedded backbone config as a transformers config object.

        Without the backbone's own dtype: the backbone takes the dtype the whole model is built or loaded in
        (``from_pretrained(..., dtype=torch.bfloat16)``, an export saved after ``.to(torch.float16)``), not
        the one it was first downloaded in, or the backbone and the head would disagree.
        """
        if self.backbone_config is None:
            raise ValueError("CardioNERConfig.backbone_config is None: build models with from_backbone()")
        settings = {key: value for key, value in self.backbone_config.items()
                    if key not in ("dtype", "torch_dtype")}
        return AutoConfig.for_model(**settings)


def _config_signature() -> inspect.Signature:
    """CardioNERConfig's arguments with the head settings spelled out (for ``inspect`` and editors):
    ``__init__`` takes them as ``**settings`` so that HEAD_SETTINGS stays their one definition."""
    arguments = list(inspect.signature(CardioNERConfig.__init__).parameters.values())[1:]  # without self
    settings = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=setting.default,
                                  annotation=setting.type.__name__)
                for name, setting in HEAD_SETTINGS.items()]
    return inspect.Signature([arguments[0], *settings, *arguments[1:]])  # backbone_config, settings, the rest


CardioNERConfig.__signature__ = _config_signature()


# ------------------------------------------------------------------------------------------------------------
# 6. Decoders: the decoding rule, chosen from the config. Each one turns the head's scores into emissions
#    (batch, seq_len, channels, tags), emissions and gold tags into a loss, and emissions into each word's
#    tag per channel with scores whose argmax is that tag. They hold no tensors: the CRF decoder's CRF is
#    registered on the model (as ``crf``).
# ------------------------------------------------------------------------------------------------------------


def force_argmax(rows: torch.Tensor, target: torch.Tensor, margin: float = 1e-3) -> torch.Tensor:
    """Raise ``rows[..., target]`` just above the other values where it is not already the (first) argmax.

    Args:
        rows: (..., num_tags) scores.
        target: (...) tag ids.
    """
    index = target[..., None]  # shape: (..., 1)
    current = rows.gather(-1, index)
    top = rows.max(-1, keepdim=True).values
    needs = rows.argmax(-1, keepdim=True) != index
    # in half precision top + margin can round back to top (4.0 + 1e-3 == 4.0 in bf16): take at least the
    # next representable value
    raised = torch.maximum(top + margin, torch.nextafter(top, torch.full_like(top, math.inf)))
    return rows.scatter(-1, index, torch.where(needs, raised, current))


def softmax_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy with optional class weights, label smoothing and focal modulation, -100 targets ignored.

    The focal loss multiplies each token's (weighted, smoothed) cross-entropy by (1 - p_target)^gamma; the
    mean is over the weights of the counted targets, as ``cross_entropy`` takes it, so gamma = 0 is plain
    cross-entropy.

    Args:
        logits: (tokens, num_labels).
        targets: (tokens,) label ids, -100 where ignored.
        weight: (num_labels,) class weights, or None.
        label_smoothing: in [0, 1).
        focal_gamma: >= 0.

    Returns:
        a scalar; 0 (kept on the graph for backward()) when no target is counted, as the CRF's NLL.
    """
    counted = targets != -100
    if not bool(counted.any()):  # cross_entropy's mean over no target is NaN
        return logits[counted].sum()  # shape: () — a sum over (0, num_labels)
    if focal_gamma == 0.0:
        return nn.functional.cross_entropy(logits, targets, weight=weight, ignore_index=-100,
                                           label_smoothing=label_smoothing)
    logits, targets = logits[counted], targets[counted]  # shape: (counted, num_labels), (counted,)
    losses = nn.functional.cross_entropy(logits, targets, weight=weight, reduction="none",
                                         label_smoothing=label_smoothing)  # shape: (counted,)
    target_probability = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1).exp()  # (counted,)
    if weight is not None:
        total = weight[targets].sum()
    else:
        total = torch.tensor(float(targets.numel()), device=logits.device)
    return ((1 - target_probability) ** focal_gamma * losses).sum() / total.clamp(min=1e-12)


class Decoded(NamedTuple):
    """What a decoder makes of a batch's emissions, per word and channel.

    Attributes:
        tags: (batch, words, channels) each word's tag id.
        scores: (batch, words, channels, tags) scores whose argmax is the tag (the eval-mode logits).
        confidences: (batch, words, channels, 3) the SPAN_OPEN, SPAN_CONTINUE and SPAN_CLOSE log-probabilities
            of the decoded tags (``span_confidence`` turns them into an entity's confidence); 0 at padding.
    """

    tags: torch.Tensor
    scores: torch.Tensor
    confidences: torch.Tensor


def independent_confidences(
    probabilities: torch.Tensor, tags: torch.Tensor, word_mask: torch.Tensor, continues: list[list[bool]]
) -> torch.Tensor:
    """SPAN_OPEN / SPAN_CONTINUE / SPAN_CLOSE log-probabilities of decoded tags when the model scores each
    word's tags on their own (softmax, sigmoid channels): the words are independent, so continuing is the
    tag's own probability, opening also needs the previous word not to continue into it, closing the next word
    not to continue the entity. An entity's confidence is then the probability of its exact tag path (and of
    its edges) under the model's own factorisation, as with a CRF.

    For sigmoid channels, ``probabilities`` of the entity tags are their sigmoids (each a calibrated estimate
    of P(tag) under the BCE loss; several may pass 0.5 at once, so a sum is clipped at 1).

    Args:
        probabilities: (batch, words, channels, tags); the O column is not read for entity tags.
        tags: (batch, words, channels) the decoded tag ids.
        word_mask: (batch, words) bool, left aligned.
        continues: (tags, tags) ``entity_continuations`` of a channel's tags.

    Returns:
        (batch, words, channels, 3), 0 at padding.
    """
    floor = max(1e-12, torch.finfo(probabilities.dtype).tiny)
    unary = probabilities.gather(-1, tags[..., None]).squeeze(-1).clamp(min=floor).log()  # (batch, words, C)
    opening, closing = unary.clone(), torch.zeros_like(unary)
    if tags.shape[1] > 1:
        table = torch.tensor(continues, dtype=probabilities.dtype, device=probabilities.device)  # (T, T)
        into = (probabilities[:, :-1] * table.transpose(0, 1)[tags[:, 1:]]).sum(-1)  # shape: (b, words-1, C)
        opening[:, 1:] = unary[:, 1:] + (1 - into).clamp(min=floor).log()
        onward = (probabilities[:, 1:] * table[tags[:, :-1]]).sum(-1)  # shape: (batch, words - 1, C)
        closing[:, :-1] = torch.where(word_mask[:, 1:, None], (1 - onward).clamp(min=floor).log(),
                                      torch.zeros_like(onward))
    confidences = torch.stack([opening, unary, closing], dim=-1)  # shape: (batch, words, C, 3)
    return torch.where(word_mask[..., None, None], confidences, torch.zeros_like(confidences))


# How a span's pieces (SPAN_OPEN of its first word, SPAN_CONTINUE of the others, SPAN_CLOSE of its last) make
# its confidence, per decoder (``span_score`` of each decoder class): chosen by measuring calibration on dev
# (docs/benchmarks.md, "Calibration of span confidences").
SPAN_SCORES = ("product", "geometric_mean")


def span_confidence(word_confidences, first: int, last: int, rule: str = "product") -> float:
    """The confidence of an entity over words ``first``..``last`` (inclusive) of one channel, in [0, 1], from
    its n + 1 pieces ``open[first], continue[first + 1], ..., continue[last], close[last]``:

    - "product": ``exp(sum of the pieces)``, the probability that exactly these words hold the entity with the
      decoded tags. A CRF's pieces are posteriors of one chain, so this is the span's marginal (what CRF
      models use);
    - "geometric_mean": ``exp(mean of the pieces)``. A softmax or sigmoid head scores each word on its own;
      the product treats the words' doubts as independent although one context makes them all, and a long
      entity then looks unlikely however right it is (on MEDDOCAN dev: ECE 0.41 for the product, 0.10 for
      this), so models without a CRF use the per-piece mean.

    Args:
        word_confidences: the channel's (words, 3) rows of SPAN_OPEN, SPAN_CONTINUE, SPAN_CLOSE
            log-probabilities (a tensor or nested lists).
        first, last: the entity's first and last word.
        rule: one of SPAN_SCORES.
    """
    if rule not in SPAN_SCORES:
        raise ValueError(f"rule must be one of {SPAN_SCORES}, got {rule!r}")
    rows = word_confidences.tolist() if hasattr(word_confidences, "tolist") else word_confidences
    total = rows[first][SPAN_OPEN] + rows[last][SPAN_CLOSE]
    total += sum(rows[k][SPAN_CONTINUE] for k in range(first + 1, last + 1))
    if rule == "geometric_mean":
        total /= last - first + 2  # the number of pieces
    return min(1.0, math.exp(total))


def tempered_scores(scores: torch.Tensor, tags: torch.Tensor, config: CardioNERConfig) -> torch.Tensor:
    """Eval-mode word scores divided by the config's ``confidence_temperature`` (the probabilities a pipeline
    reads from them are then the calibrated ones), the decoded tag kept as their argmax.

    Args:
        scores: (batch, words, channels, tags) scores whose argmax is ``tags``.
        tags: (batch, words, channels) the decoded tag ids.
    """
    if config.confidence_temperature == 1.0:
        return scores
    return force_argmax(scores / config.confidence_temperature, tags)


def scheme_constraints(config: CardioNERConfig, layout: TagLayout) -> tuple | None:
    """The constraints a model without a CRF decodes under: the tag scheme's (``layout.constraints``) with
    ``constrained_decoding`` (read at every call), else None."""
    return layout.constraints if config.constrained_decoding else None


def decide_words(
    word_emissions: torch.Tensor,
    path_scores: torch.Tensor,
    word_mask: torch.Tensor,
    constraints: tuple[list[bool], list[list[bool]], list[bool]] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word's tag in each channel, without a CRF: the argmax of its emissions, or with ``constraints``
    the path the tag scheme allows with the highest sum of ``path_scores`` (``scheme_viterbi``).

    Args:
        word_emissions: (batch, words, channels, tags).
        path_scores: what a path sums, the shape of ``word_emissions``.
        word_mask: (batch, words) bool, left aligned.
        constraints: ``scheme_constraints``: those of a channel's tags, or None.

    Returns:
        (tags (batch, words, channels), scores (batch, words, channels, tags) whose argmax is the tag).
    """
    if constraints is None:
        return word_emissions.argmax(-1), word_emissions
    word_tags = scheme_viterbi(path_scores.detach(), word_mask, constraints)  # (batch, words, channels)
    return word_tags, force_argmax(word_emissions, word_tags)


class SoftmaxDecoder:
    """A softmax over the tags of each channel (a flat model: its one channel, over every label).

    Loss: cross-entropy at word starts (at every labelled subword with ``label_all_subwords``), with the
    config's ``class_weights``, ``label_smoothing`` and ``focal_gamma``. Decoding: each word's argmax, or with
    ``constrained_decoding`` the path the tag scheme allows with the highest sum of log-probabilities.
    """

    scores_outside = True  # the head gives O a score of its own
    span_score = "geometric_mean"  # words scored independently (``span_confidence``)

    def __init__(self, config: CardioNERConfig, layout: TagLayout) -> None:
        self.config = config
        self.layout = layout
        self.crf = None

    def emissions(self, scores: torch.Tensor) -> torch.Tensor:
        """The head's scores (batch, seq_len, channels, tags) are the emissions."""
        return scores

    def prior_scores(self, priors: torch.Tensor) -> torch.Tensor:
        """Output biases whose softmax is ``priors``."""
        return priors.log()

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor, words: Words) -> torch.Tensor:
        """Args: emissions (batch, seq_len, channels, tags); labels (batch, seq_len, channels), -100: none."""
        weight = None
        if self.config.class_weights is not None:
            weight = torch.tensor(self.config.class_weights, dtype=emissions.dtype, device=emissions.device)
        if not self.config.label_all_subwords:
            labels = torch.where(words.word_start[..., None], labels, torch.full_like(labels, -100))
        return softmax_loss(
            emissions.reshape(-1, emissions.shape[-1]),  # shape: (batch * seq_len * channels, tags)
            labels.reshape(-1),  # shape: (batch * seq_len * channels,)
            weight=weight,
            label_smoothing=self.config.label_smoothing,
            focal_gamma=self.config.focal_gamma,
        )

    def loss_weight(self, labels: torch.Tensor, words: Words) -> torch.Tensor:
        """What ``loss`` is a mean over: the counted targets, each weighted by its class weight."""
        if not self.config.label_all_subwords:
            labels = torch.where(words.word_start[..., None], labels, torch.full_like(labels, -100))
        targets = labels[labels != -100]  # shape: (counted,)
        if self.config.class_weights is None:
            return torch.tensor(float(targets.numel()), device=labels.device)
        weight = torch.tensor(self.config.class_weights, dtype=torch.float, device=labels.device)
        return weight[targets].sum()

    def decode(self, emissions: torch.Tensor, words: Words) -> Decoded:
        """Each word's tag, scores whose argmax is it, and span confidences from the words' softmax."""
        word_emissions = gather_rows(emissions, words.positions)  # shape: (batch, words, channels, tags)
        path_scores = word_emissions.log_softmax(-1)  # shape: (batch, words, channels, tags)
        constraints = scheme_constraints(self.config, self.layout)
        tags, scores = decide_words(word_emissions, path_scores, words.word_mask, constraints)
        confidences = self.confidences(word_emissions, tags, words.word_mask)
        return Decoded(tags, tempered_scores(scores, tags, self.config), confidences)

    def probabilities(self, word_emissions: torch.Tensor, temperature: float) -> torch.Tensor:
        """Each word's tag probabilities at ``temperature``: (batch, words, channels, tags), softmax."""
        return (word_emissions.detach().float() / temperature).softmax(-1)

    def confidences(self, word_emissions: torch.Tensor, tags: torch.Tensor, word_mask: torch.Tensor,
                    temperature: float | None = None) -> torch.Tensor:
        """The span-confidence pieces (batch, words, channels, 3) of decoded ``tags`` (batch, words,
        channels), from ``word_emissions`` (batch, words, channels, tags) divided by ``temperature`` (None:
        the config's ``confidence_temperature``)."""
        temperature = self.config.confidence_temperature if temperature is None else temperature
        probabilities = self.probabilities(word_emissions, temperature)
        return independent_confidences(probabilities, tags, word_mask, self.layout.continues)

    def word_nll(self, word_emissions: torch.Tensor, gold: torch.Tensor, word_mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
        """Summed negative log-likelihood of the gold tags (batch, words, channels) of the words in
        ``word_mask`` under the word scores divided by ``temperature`` (what ``cardioner calibrate`` fits)."""
        log_probabilities = (word_emissions.float() / temperature).log_softmax(-1)  # (batch, words, C, tags)
        picked = log_probabilities.gather(-1, gold.clamp(min=0)[..., None]).squeeze(-1)  # (batch, words, C)
        return -(picked * word_mask[..., None]).sum()


class SigmoidDecoder:
    """Independent sigmoids per channel and entity tag (a multi-label model: a channel per entity type).

    The head gives each channel's entity tags (B, I[, E, S]) a logit, ``p(tag) = sigmoid(logit)``, trained
    with binary cross-entropy against the one-hot gold tag of each channel (O: all zeros), each word-channel
    weighted by ``class_weights[channel][gold tag]`` when given. The emissions put ``logit(threshold)`` of the
    channel (the config's ``thresholds``, read at every call) in the O column, so that the decision rule is an
    argmax:

        a word is O in channel T unless its most probable entity tag reaches T's threshold (then that tag).

    With ``constrained_decoding`` each channel's words are decoded jointly instead: the path the tag scheme
    allows with the highest sum of these scores (O scoring logit(t)), which mends fragments such as ``B I O
    I``.
    """

    scores_outside = False  # O's score is the channel's threshold, not a learned score
    span_score = "geometric_mean"  # words scored independently (``span_confidence``)

    def __init__(self, config: CardioNERConfig, layout: TagLayout) -> None:
        self.config = config
        self.layout = layout
        self.crf = None

    def emissions(self, scores: torch.Tensor) -> torch.Tensor:
        """Entity-tag logits (batch, seq_len, channels, tags - 1) -> (batch, seq_len, channels, tags)."""
        num_channels = self.layout.num_channels
        thresholds = self.config.thresholds or [0.5] * num_channels
        thresholds = torch.tensor(thresholds, dtype=scores.dtype, device=scores.device)  # shape: (channels,)
        outside = torch.logit(thresholds).expand(*scores.shape[:2], num_channels)  # shape: (b, s, C)
        outside = outside[..., None]  # shape: (batch, seq_len, channels, 1)
        return torch.cat([outside, scores], dim=-1)  # shape: (batch, seq_len, channels, tags)

    def prior_scores(self, priors: torch.Tensor) -> torch.Tensor:
        """Output biases whose sigmoid is each entity tag's prior: (channels, tags) -> (channels, tags -
        1)."""
        return torch.logit(priors[..., 1:])

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor, words: Words) -> torch.Tensor:
        """Args: emissions (batch, seq_len, channels, tags); labels (batch, seq_len, channels), -100: none."""
        labelled = labels != -100  # shape: (batch, seq_len, channels)
        if not self.config.label_all_subwords:
            labelled = labelled & words.word_start[..., None]
        gold = labels.clamp(min=0)  # shape: (batch, seq_len, channels)
        one_hot = nn.functional.one_hot(gold, emissions.shape[-1])  # shape: (batch, seq_len, C, T)
        targets = one_hot[..., 1:].to(emissions.dtype)  # shape: (batch, seq_len, C, T - 1)
        losses = nn.functional.binary_cross_entropy_with_logits(emissions[..., 1:], targets, reduction="none")
        weights = labelled.to(emissions.dtype)  # shape: (batch, seq_len, channels)
        if self.config.class_weights is not None:
            table = torch.tensor(self.config.class_weights, dtype=emissions.dtype, device=emissions.device)
            per_word = table.expand(*gold.shape, table.shape[-1])  # shape: (batch, seq_len, C, T)
            weights = weights * per_word.gather(-1, gold[..., None]).squeeze(-1)  # shape: (batch, seq_len, C)
        return (losses.mean(-1) * weights).sum() / weights.sum().clamp(min=1e-12)

    def loss_weight(self, labels: torch.Tensor, words: Words) -> torch.Tensor:
        """What ``loss`` is a mean over: the labelled word-channels, each weighted by its gold tag."""
        labelled = labels != -100  # shape: (batch, seq_len, channels)
        if not self.config.label_all_subwords:
            labelled = labelled & words.word_start[..., None]
        if self.config.class_weights is None:
            return labelled.sum().float()
        table = torch.tensor(self.config.class_weights, dtype=torch.float, device=labels.device)
        gold = labels.clamp(min=0)  # shape: (batch, seq_len, channels)
        per_word = table.expand(*gold.shape, table.shape[-1]).gather(-1, gold[..., None]).squeeze(-1)
        return (per_word * labelled).sum()  # per_word shape: (batch, seq_len, channels)

    def decode(self, emissions: torch.Tensor, words: Words) -> Decoded:
        """Each word's tag per channel, scores whose argmax is it (a path sums the logits themselves: it
        maximises the summed margins over the thresholds), and span confidences from the tags' sigmoids."""
        word_emissions = gather_rows(emissions, words.positions)  # shape: (batch, words, channels, tags)
        constraints = scheme_constraints(self.config, self.layout)
        tags, scores = decide_words(word_emissions, word_emissions, words.word_mask, constraints)
        confidences = self.confidences(word_emissions, tags, words.word_mask)
        return Decoded(tags, tempered_scores(scores, tags, self.config), confidences)

    def probabilities(self, word_emissions: torch.Tensor, temperature: float) -> torch.Tensor:
        """Each word's entity-tag sigmoids at ``temperature``: (batch, words, channels, tags); O's column
        (the threshold) is never read as a probability."""
        return (word_emissions.detach().float() / temperature).sigmoid()

    def confidences(self, word_emissions: torch.Tensor, tags: torch.Tensor, word_mask: torch.Tensor,
                    temperature: float | None = None) -> torch.Tensor:
        """The span-confidence pieces (batch, words, channels, 3) of decoded ``tags``, from the entity-tag
        logits divided by ``temperature`` (None: the config's ``confidence_temperature``)."""
        temperature = self.config.confidence_temperature if temperature is None else temperature
        probabilities = self.probabilities(word_emissions, temperature)
        return independent_confidences(probabilities, tags, word_mask, self.layout.continues)

    def word_nll(self, word_emissions: torch.Tensor, gold: torch.Tensor, word_mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
        """Summed binary cross-entropy of the gold tags (batch, words, channels), one-hot over the entity
        tags, under the logits divided by ``temperature``, over the words in ``word_mask``."""
        targets = nn.functional.one_hot(gold.clamp(min=0), word_emissions.shape[-1])[..., 1:].float()
        entity_logits = word_emissions[..., 1:].float() / temperature  # shape: (batch, words, C, tags - 1)
        losses = nn.functional.binary_cross_entropy_with_logits(entity_logits, targets, reduction="none")
        return (losses.sum(-1) * word_mask[..., None]).sum()


class CRFDecoder:
    """A CRF over the words of each channel (``crf``: one chain, or one per channel run as one batch): trained
    by its negative log-likelihood over the words labelled in every channel (``crf_reduction``), decoded by
    Viterbi.

    The scores of a word are its log marginals (forward-backward) with the Viterbi tag raised to the argmax,
    so that eval-mode logits give the Viterbi path and its confidences; span confidences are the posterior
    probabilities of the Viterbi path's pieces (``_path_confidences``), from the same forward-backward pass.
    The config's ``confidence_temperature`` T divides every CRF score in that pass (``CRF.posteriors``): the
    Viterbi path, decoded at T = 1, is the most likely path at every T, so T moves confidences, never tags.
    A flat model's CRF keeps pytorch-crf's layout, without a channel dimension (its weights load as they are):
    its one channel is squeezed out.
    """

    scores_outside = True  # the CRF learns O's emission like any tag's
    span_score = "product"  # the pieces are posteriors of one chain: their product is the span's marginal

    def __init__(self, config: CardioNERConfig, layout: TagLayout) -> None:
        self.config = config
        self.layout = layout
        start, transitions, end = layout.constraints if config.crf_constraints else (None, None, None)
        num_channels = None if layout.flat else layout.num_channels
        self.crf = CRF(layout.num_tags, start, transitions, end, num_channels=num_channels)

    def emissions(self, scores: torch.Tensor) -> torch.Tensor:
        """The head's scores (batch, seq_len, channels, tags) are the emissions."""
        return scores

    def prior_scores(self, priors: torch.Tensor) -> torch.Tensor:
        """Output biases whose softmax is ``priors``."""
        return priors.log()

    def _chains(self, values: torch.Tensor) -> torch.Tensor:
        """(batch, words, channels, ...) as the CRF takes them: without the channel dimension for a flat
        CRF."""
        return values if self.crf.num_channels is not None else values.squeeze(2)

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor, words: Words) -> torch.Tensor:
        """Args: emissions (batch, seq_len, channels, tags); labels (batch, seq_len, channels), -100: none."""
        labelled = words.word_start & (labels != -100).all(-1)  # shape: (batch, seq_len): channels together
        positions, mask = gather_positions(labelled)
        word_emissions = self._chains(gather_rows(emissions, positions))  # shape: (batch, words[, C], tags)
        word_labels = self._chains(gather_rows(labels, positions))  # shape: (batch, words[, C])
        return self.crf.nll(word_emissions, word_labels, mask, reduction=self.config.crf_reduction)

    def loss_weight(self, labels: torch.Tensor, words: Words) -> torch.Tensor | None:
        """What ``loss`` is a mean over (``crf_reduction``): the labelled words of every chain ("token_mean")
        or the chains ("mean"); None for "sum"."""
        chains = labels.shape[-1] if self.crf.num_channels is not None else 1
        if self.config.crf_reduction == "sum":
            return None
        if self.config.crf_reduction == "mean":
            return torch.tensor(float(labels.shape[0] * chains), device=labels.device)
        labelled = words.word_start & (labels != -100).all(-1)  # shape: (batch, seq_len), as in ``loss``
        return labelled.sum().float() * chains

    def decode(self, emissions: torch.Tensor, words: Words) -> Decoded:
        """Viterbi tags (batch, words, channels), log marginals (batch, words, channels, tags) with the tag
        raised to the argmax, and the Viterbi path's span confidences."""
        word_emissions = self._chains(gather_rows(emissions, words.positions))  # (batch, words[, C], tags)
        word_tags = self.crf.viterbi_tags(word_emissions, words.word_mask)  # shape: (batch, words[, C])
        temperature = self.config.confidence_temperature  # scales the posteriors only: the path is Viterbi's
        marginals, confidences = self.crf.posteriors(word_emissions.detach(), words.word_mask, word_tags,
                                                     self.layout.continues, temperature)
        floor = max(1e-12, torch.finfo(marginals.dtype).tiny)  # fp16 flushes 1e-12 to 0, whose log is -inf
        word_scores = force_argmax(marginals.clamp(min=floor).log(), word_tags)
        if self.crf.num_channels is None:  # back to one channel
            return Decoded(word_tags[..., None], word_scores[..., None, :], confidences[..., None, :].float())
        return Decoded(word_tags, word_scores, confidences.float())

    def confidences(self, word_emissions: torch.Tensor, tags: torch.Tensor, word_mask: torch.Tensor,
                    temperature: float | None = None) -> torch.Tensor:
        """The span-confidence pieces (batch, words, channels, 3) of the path ``tags`` (batch, words,
        channels), from the posteriors of the CRF with every score divided by ``temperature`` (None: the
        config's ``confidence_temperature``)."""
        temperature = self.config.confidence_temperature if temperature is None else temperature
        _, confidences = self.crf.posteriors(self._chains(word_emissions.detach()), word_mask,
                                             self._chains(tags), self.layout.continues, temperature)
        return (confidences[..., None, :] if self.crf.num_channels is None else confidences).float()

    def word_nll(self, word_emissions: torch.Tensor, gold: torch.Tensor, word_mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
        """Summed negative log-likelihood of the gold paths (batch, words, channels) over the words in
        ``word_mask`` (left aligned), every CRF score divided by ``temperature``."""
        return self.crf.nll(self._chains(word_emissions.float()), self._chains(gold.clamp(min=0)), word_mask,
                            reduction="sum", temperature=temperature)


def choose_decoder(config: CardioNERConfig, layout: TagLayout) -> type:
    """The decoding rule the config describes: a CRF (``use_crf``; per channel for a multi-label model), else
    a softmax (flat) or sigmoid channels (multi-label)."""
    if config.use_crf:
        return CRFDecoder
    return SoftmaxDecoder if layout.flat else SigmoidDecoder


# ------------------------------------------------------------------------------------------------------------
# 7. The model: backbone -> head input -> head -> emissions -> loss (with labels) or decode (eval)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class CardioNERTokenClassifierOutput(TokenClassifierOutput):
    """TokenClassifierOutput plus ``emissions``: the raw head output (``logits`` are decoded ones in eval),
    and for multi-label models in eval mode ``channel_logits`` (batch, seq_len, channels, tags): argmax = each
    channel's tag, and ``word_confidences`` (batch, seq_len, 3), multi-label (batch, seq_len, channels, 3): at
    each word's first subword the SPAN_OPEN, SPAN_CONTINUE and SPAN_CLOSE log-probabilities of its decoded tag
    (``span_confidence``), 0 elsewhere. With labels, ``loss_weight`` is what the loss is a mean over (the
    counted word-channels, weighted as the loss weighs them; sequences for a CRF's "mean"), None for a summed
    loss: the mean over the union of several batches is ``sum(loss * loss_weight) / sum(loss_weight)``, which
    is how several processes make their step the step on their batches together."""

    emissions: torch.FloatTensor | None = None
    channel_logits: torch.FloatTensor | None = None
    word_confidences: torch.FloatTensor | None = None
    loss_weight: torch.FloatTensor | None = None


def pipeline_logits(
    emissions: torch.Tensor, words: Words, word_scores: torch.Tensor, layout: TagLayout
) -> torch.Tensor:
    """Token logits over id2label from which the stock pipeline reproduces the word decisions, with every
    aggregation strategy ("simple", and the word-level "first", "max", "average" where its words are ours:
    WordPiece).

    Word starts: the word's scores. Continuation subwords: the word's scores with its ``I-`` tag raised just
    above the word's tag (so the argmax continues the entity, while the word's tag keeps the highest peak and
    the highest average over the word's subwords). Tokens between words that are not special (a bare ``▁``):
    ``I-X`` when the words on both sides are in one X entity, else O. Special tokens and padding: emissions.

    Args:
        emissions: (batch, seq_len, num_labels) the emissions over id2label (``TagLayout.label_scores``).
        words: the words of the batch.
        word_scores: (batch, words, num_labels) each word's scores over id2label; argmax: the word's label.
        layout: the model's TagLayout (continuation and type of each label, the id of O).
    """
    if word_scores.shape[1] == 0:
        return emissions
    word_tags = word_scores.argmax(-1)  # shape: (batch, words)
    continuation = torch.tensor(layout.continuation, device=emissions.device)
    tag_type = torch.tensor(layout.tag_type, device=emissions.device)
    own_tags = words.spread(word_tags)  # shape: (batch, seq_len)
    own_scores = words.spread(word_scores)  # shape: (batch, seq_len, num_labels)
    logits = torch.where(words.word_start[..., None], own_scores, emissions)
    inner = words.in_word & ~words.word_start
    # the word's tag a close second: argmax I-X ("simple" joins the word), a flatter peak than the first
    # subword's ("max" keeps the first subword's tag), and on average the word's tag ("average")
    continued = force_argmax(own_scores, continuation[own_tags])
    logits = torch.where(inner[..., None], continued, logits)
    if layout.outside is not None:
        num_words = words.word_mask.sum(1, keepdim=True)  # shape: (batch, 1)
        following = (words.word_index + 1).clamp(max=word_tags.shape[1] - 1)
        next_tags = word_tags.gather(1, following)  # shape: (batch, seq_len)
        spans = (
            (words.word_index >= 0)
            & (words.word_index + 1 < num_words)
            & (continuation[next_tags] == next_tags)
            & (tag_type[next_tags] >= 0)
            & (tag_type[own_tags] == tag_type[next_tags])
        )
        gap_tags = torch.where(spans, next_tags, torch.full_like(next_tags, layout.outside))
        logits = torch.where(words.gap[..., None], force_argmax(emissions, gap_tags), logits)
    return logits


def _build_backbone(backbone_config: PretrainedConfig) -> PreTrainedModel:
    """AutoModel.from_config, without the pooling layer where the architecture has one (unused here)."""
    try:
        return AutoModel.from_config(backbone_config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(backbone_config)


def _load_pretrained_backbone(name_or_path: str) -> PreTrainedModel:
    try:
        return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_pretrained(name_or_path)


class CardioNERPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading rules shared by cardioner models."""

    config_class = CardioNERConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # Goes through nn.init, which transformers guards so that loaded tensors are never re-initialised.
        if isinstance(module, CRF):
            module.reset_parameters()
        elif isinstance(module, KANHead) and module.uses_basis_mean:  # after its layers: children come first
            nn.init.zeros_(module.classifier.weight)  # the basis term starts at zero (see KANHead)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, PreTrainedModel) or module is self:
            return
        elif hasattr(self, "backbone"):
            # transformers 4.x walks the whole tree with this method: the backbone's own rules for its modules
            self.backbone._init_weights(module)


class TokenClassificationModel(CardioNERPreTrainedModel):
    """Backbone + token head + a decoder chosen from the config; decisions per word.

    ``forward`` runs backbone -> head input -> head -> emissions (batch, seq_len, channels, tags), then the
    loss when labels are given, and in eval mode the decoded outputs. The decoder (``choose_decoder``) is a
    softmax (flat), sigmoid channels (multi-label), or a CRF (``use_crf``; one per channel for a multi-label
    model).

    Outputs (``CardioNERTokenClassifierOutput``): ``emissions``, the raw emissions ((batch, seq_len,
    num_labels) for a flat model, (batch, seq_len, channels, tags) for a multi-label one); ``logits``, the
    emissions while training, and in eval mode logits over id2label made for the stock pipeline: each word's
    first subword gets the word's decoded scores (argmax = its tag: the Viterbi path with a CRF, whose scores
    are then log marginals), its continuation subwords ``I-<type>`` of the word's tag (O stays O), so that
    ``aggregation_strategy="simple"`` returns whole, decoded words (a multi-label model shows, per word, the
    channel whose tag beats its O by the widest margin); ``channel_logits`` (multi-label, eval): each
    channel's scores with the word's decoded scores at word starts; ``loss`` with labels.

    The other exported names (TokenClassificationModelCRF, MultiLabelTokenClassificationModel,
    MultiLabelTokenClassificationModelCRF) are this class with a setting fixed.
    """

    use_crf_by_class: bool | None = None  # whether the class name says CRF; None: the config decides
    multilabel_by_class = False  # whether it says multi-label (from_backbone: channels from the labels)

    def __init__(self, config: CardioNERConfig) -> None:
        if self.use_crf_by_class is not None:
            config.use_crf = self.use_crf_by_class
        super().__init__(config)
        self.num_labels = config.num_labels
        labels = [config.id2label[index] for index in range(config.num_labels)]
        self.layout = TagLayout(labels, config.channel_types)
        if self.multilabel_by_class and self.layout.flat:
            raise ValueError("a multi-label model needs config.channel_types (the entity type of each "
                             "channel)")
        self.backbone = _build_backbone(config.build_backbone_config())
        self.head_input = HeadInput(self.backbone.config, config)  # layers, [CLS]; no weights by default
        decoder_class = choose_decoder(config, self.layout)
        scores_per_channel = self.layout.num_tags - (0 if decoder_class.scores_outside else 1)
        num_scores = self.layout.num_channels * scores_per_channel
        self.head = TOKEN_HEADS[config.head](self.head_input.output_size, num_scores, config)
        vocab_size = max(int(getattr(self.backbone.config, "vocab_size", 0) or 0), 1)
        # TOKEN_* class of each vocabulary id; -1 until set_token_classes() fills it (checked in forward).
        unset = torch.full((vocab_size,), -1, dtype=torch.int8)
        self.register_buffer("token_classes", unset, persistent=True)
        self.decoder = decoder_class(config, self.layout)  # after the head: seeded models start as they did
        self.crf = self.decoder.crf  # registered here: parameters named crf.* (pytorch-crf's, every export's)
        backbone_arguments = inspect.signature(self.backbone.forward).parameters
        self._backbone_takes_token_types = "token_type_ids" in backbone_arguments
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.post_init()
        if config.tag_priors is not None:  # on the meta device (loading) a no-op: loaded weights replace it
            priors = torch.tensor(config.tag_priors, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
            bias = self.head.classifier.bias
            with torch.no_grad():
                bias.copy_(self.decoder.prior_scores(priors).flatten().to(bias.dtype))

    @property
    def decoding_constraints(self) -> tuple | None:
        """The tag scheme's constraints a model without a CRF decodes under (None: argmax per word, or a
        CRF, which applies its own)."""
        return None if self.config.use_crf else scheme_constraints(self.config, self.layout)

    @property
    def span_score(self) -> str:
        """How the decoder's span-confidence pieces make a span's confidence (``span_confidence``'s rule)."""
        return self.decoder.span_score

    @property
    def learns_outside_score(self) -> bool:
        """Whether the head scores O (False for sigmoid channels, whose O score is the threshold)."""
        return self.decoder.scores_outside

    # -- building --------------------------------------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        tokenizer,
        id2label: dict[int, str],
        **head_settings,
    ) -> TokenClassificationModel:
        """A fresh model on pretrained backbone weights (``AutoModel.from_pretrained``); the head is new.

        Args:
            name_or_path: a model name or folder with backbone weights.
            tokenizer: the fast tokenizer that goes with it (fills the word-segmentation table).
            id2label: tag of each id, e.g. {0: "O", 1: "B-DISO", 2: "I-DISO"}.
            **head_settings: CardioNERConfig arguments (head, use_crf, classifier_dropout, channel_types,
                ...); ``use_crf`` defaults to what the class name says, and a multi-label class takes
                ``channel_types`` from the labels' types when they are not given.

        Returns:
            the class ``model_class_for`` names for the config (TokenClassificationModelCRF with a CRF, ...).
        """
        id2label = {int(index): label for index, label in id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"id2label ids must be 0..n-1, got {sorted(id2label)}")
        head_settings.setdefault("use_crf", bool(cls.use_crf_by_class))
        if cls.multilabel_by_class and head_settings.get("channel_types") is None:
            head_settings["channel_types"] = sorted({split_tag(tag)[1] for tag in id2label.values()} - {None})
        backbone = _load_pretrained_backbone(name_or_path)
        config = CardioNERConfig(
            backbone_config=backbone.config.to_dict(),
            id2label=id2label,
            label2id={label: index for index, label in id2label.items()},
            **head_settings,
        )
        model = model_class_for(config)(config)
        missing, unexpected = model.backbone.load_state_dict(backbone.state_dict(), strict=False)
        if missing:
            raise ValueError(f"backbone weights from {name_or_path} miss {len(missing)} keys, e.g. "
                             f"{missing[:5]}")
        model.set_token_classes(tokenizer)
        return model

    def set_token_classes(self, tokenizer) -> None:
        """Fill the word-segmentation table from the tokenizer (see ``build_token_classes``)."""
        table = build_token_classes(tokenizer)
        size = max(table.shape[0], self.token_classes.shape[0])
        full = torch.full((size,), TOKEN_SPECIAL, dtype=torch.int8)
        full[: table.shape[0]] = table
        self.token_classes = full.to(self.token_classes.device)

    # -- the steps of forward --------------------------------------------------------------------------------

    def words(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> Words:
        """The words of a batch (see the module docstring), from the ids alone; context pieces
        (``context_mask``) are in no word."""
        if context_mask is not None:
            if context_mask.shape != input_ids.shape:
                raise ValueError(f"context_mask shape {tuple(context_mask.shape)} != input_ids shape "
                                 f"{tuple(input_ids.shape)}")
            attention_mask = attention_mask * (1 - context_mask.to(attention_mask.dtype))  # context: no words
        return Words.find(self.token_classes, input_ids, attention_mask)

    def backbone_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """What the head reads from the backbone (the one place the backbone runs; cached when it is frozen).

        Returns:
            (batch, seq_len, hidden): the backbone's last hidden states; with ``num_layers_to_use`` N > 1,
            (batch, seq_len, N, hidden): its last N hidden states, the top one as the single-layer model sees
            it.
        """
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._backbone_takes_token_types:
            inputs["token_type_ids"] = token_type_ids
        num_layers = self.config.num_layers_to_use
        if num_layers == 1:
            return self.backbone(**inputs)[0]  # shape: (batch, seq_len, hidden)
        outputs = self.backbone(**inputs, output_hidden_states=True)
        if len(outputs.hidden_states) < num_layers:
            raise ValueError(f"num_layers_to_use={num_layers}, but the backbone returned "
                             f"{len(outputs.hidden_states)} hidden states")
        layers = (*outputs.hidden_states[-num_layers:-1], outputs[0])  # top: after a final norm, if any
        return torch.stack(layers, dim=2)  # shape: (batch, seq_len, num_layers, hidden)

    def emissions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoder's emissions (batch, seq_len, channels, tags): backbone, head input, head, per channel.

        Args:
            hidden_states: precomputed ``backbone_features`` (then the backbone is not run), or None.
        """
        if hidden_states is None:
            hidden_states = self.backbone_features(input_ids, attention_mask, token_type_ids)
        features = self.head_input(hidden_states, attention_mask)  # shape: (batch, seq_len, head input size)
        scores = self.head(features, attention_mask)  # shape: (batch, seq_len, channels * scores per channel)
        scores = scores.unflatten(-1, (self.layout.num_channels, -1))  # shape: (batch, seq_len, C, scores)
        return self.decoder.emissions(scores)  # shape: (batch, seq_len, channels, tags)

    def _check_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The attention mask (all ones when None) and the labels as (batch, seq_len, channels), after
        checking the shapes and the word-segmentation table."""
        if input_ids is None or input_ids.dim() != 2:
            shape = None if input_ids is None else tuple(input_ids.shape)
            raise ValueError(f"input_ids must be (batch, seq_len), got {shape}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                             f"{tuple(input_ids.shape)}")
        labels = self.layout.channel_labels(labels, tuple(input_ids.shape))
        if int(self.token_classes[0]) < 0:
            raise ValueError("token_classes is not set: build the model with from_backbone() or call "
                             "set_token_classes()")
        return attention_mask, labels

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> CardioNERTokenClassifierOutput:
        """Emissions per token; the loss when labels are given; pipeline-ready logits in eval mode.

        Args:
            input_ids: (batch, seq_len).
            attention_mask: (batch, seq_len), 1 for real tokens; None means all real.
            token_type_ids: (batch, seq_len) or None (dropped for backbones without them).
            labels: (batch, seq_len, channels) tag ids of each channel at word starts (and, with
                label_all_subwords, other subwords), -100 elsewhere; a flat model (one channel) also takes
                (batch, seq_len).
            hidden_states: precomputed ``backbone_features`` of these inputs (cached features of a frozen
                backbone); the backbone is then not run. Words still come from ``input_ids``.
            context_mask: (batch, seq_len), 1 at context pieces: text of the neighbouring sentences that a
                window carries only to inform its own words. The backbone reads them; they are in no word, so
                they carry no loss and take no part in decoding (a CRF's chain runs over the window's own
                words). None: no context.
            **kwargs: ignored (what pipelines may pass along).

        Returns:
            CardioNERTokenClassifierOutput (see the class docstring).
        """
        attention_mask, labels = self._check_inputs(input_ids, attention_mask, labels)  # labels: (b, s, C)
        words = self.words(input_ids, attention_mask, context_mask)
        emissions = self.emissions(input_ids, attention_mask, token_type_ids, hidden_states)  # (b, s, C, T)
        loss = loss_weight = None
        if labels is not None:
            loss = self.decoder.loss(emissions, labels, words)
            loss_weight = self.decoder.loss_weight(labels, words)
        outputs = {"logits": self.layout.public(emissions, -2)}
        if not self.training:
            with torch.no_grad():
                outputs = self.decoded_outputs(emissions, words)
        public_emissions = self.layout.public(emissions, -2)
        return CardioNERTokenClassifierOutput(loss=loss, emissions=public_emissions, loss_weight=loss_weight,
                                              **outputs)

    def decoded_outputs(self, emissions: torch.Tensor, words: Words) -> dict[str, torch.Tensor | None]:
        """Eval-mode ``logits`` (batch, seq_len, num_labels) for the stock pipeline, ``channel_logits``
        (multi-label): the decoder's word scores at word starts (see the class docstring), and
        ``word_confidences`` at word starts."""
        decoded = self.decoder.decode(emissions, words)
        word_scores = decoded.scores  # shape: (batch, words, channels, tags)
        starts = words.word_start[..., None, None]  # shape: (batch, seq_len, 1, 1)
        channel_logits = torch.where(starts, words.spread(word_scores), emissions)
        label_emissions = self.layout.label_scores(emissions)  # shape: (batch, seq_len, num_labels)
        label_word_scores = self.layout.label_scores(word_scores)  # shape: (batch, words, num_labels)
        logits = pipeline_logits(label_emissions, words, label_word_scores, self.layout)
        spread = words.spread(decoded.confidences)  # shape: (batch, seq_len, channels, 3)
        confidences = torch.where(starts, spread, torch.zeros_like(spread))
        return {"logits": logits, "channel_logits": self.layout.channel_logits(channel_logits),
                "word_confidences": self.layout.public(confidences, -2)}

    # -- decoding --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> list[list]:
        """Tag id of each word, in word order (Viterbi with a CRF, the decoder's rule otherwise).

        Args:
            input_ids, attention_mask, token_type_ids, context_mask: as in ``forward`` (context pieces are
                in no word: they get no tag).

        Returns:
            one list per example with one entry per word (words as ``word_start_mask`` defines them): the tag
            id (flat), or the list of every channel's tag id (multi-label, in the order of
            ``config.channel_types``).
        """
        attention_mask, _ = self._check_inputs(input_ids, attention_mask)
        words = self.words(input_ids, attention_mask, context_mask)
        word_tags = self.decoder.decode(self.emissions(input_ids, attention_mask, token_type_ids), words).tags
        rows = self.layout.public(word_tags, -1).tolist()  # (batch, words[, channels])
        lengths = words.word_mask.sum(1).tolist()
        return [row[:length] for row, length in zip(rows, lengths, strict=True)]

    @torch.no_grad()
    def decode_spans(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        offset_mapping: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        return_scores: bool = False,
    ) -> list[list[tuple]]:
        """Entities with character offsets; a multi-label model gives each type's entities, overlaps included.

        Args:
            input_ids, attention_mask, token_type_ids, context_mask: as in ``forward`` (no entity covers a
                context piece).
            offset_mapping: (batch, seq_len, 2) character offsets of each token, from the tokenizer called
                with ``return_offsets_mapping=True``.
            return_scores: add each entity's confidence (``span_confidence``) as a fourth item.

        Returns:
            one sorted list per example of (start, end, entity type[, confidence]); a word spans its first
            subword's start to its last subword's end; tags are read leniently (``tags_to_entities``: an I-
            without its B- starts one).
        """
        if offset_mapping is None or tuple(offset_mapping.shape) != (*input_ids.shape, 2):
            shape = None if offset_mapping is None else tuple(offset_mapping.shape)
            raise ValueError(f"offset_mapping must have shape {(*input_ids.shape, 2)}, got {shape}")
        attention_mask, _ = self._check_inputs(input_ids, attention_mask)
        words = self.words(input_ids, attention_mask, context_mask)
        decoded = self.decoder.decode(self.emissions(input_ids, attention_mask, token_type_ids), words)
        results = []
        for b, length in enumerate(words.word_mask.sum(1).tolist()):
            word_chars = [[-1, -1] for _ in range(length)]  # (start, end) characters of each word
            for position in torch.nonzero(words.in_word[b]).flatten().tolist():
                start, end = offset_mapping[b, position].tolist()
                chars = word_chars[int(words.word_index[b, position])]
                chars[0] = start if chars[0] < 0 else chars[0]
                chars[1] = end
            spans = {}  # (start, end, type) -> confidence
            for channel in range(self.layout.num_channels):
                labels = self.layout.channel_tag_labels(channel, decoded.tags[b, :length, channel].tolist())
                confidences = decoded.confidences[b, :length, channel].tolist()  # (words, 3)
                for first, last, entity_type in tags_to_entities(labels):
                    key = (word_chars[first][0], word_chars[last][1], entity_type)
                    spans[key] = span_confidence(confidences, first, last, self.span_score)
            results.append(sorted((*key, score) if return_scores else key for key, score in spans.items()))
        return results


class TokenClassificationModelCRF(TokenClassificationModel):
    """TokenClassificationModel with ``use_crf`` set: a CRF over word positions, trained by its NLL, decoded
    by Viterbi (the name existing exports' auto_map gives)."""

    use_crf_by_class = True


class MultiLabelTokenClassificationModel(TokenClassificationModel):
    """TokenClassificationModel for overlapping entity types (``channel_types`` set), with sigmoid channels
    (``SigmoidDecoder``): one O/B/I channel per type, types never compete."""

    use_crf_by_class = False
    multilabel_by_class = True


class MultiLabelTokenClassificationModelCRF(TokenClassificationModel):
    """TokenClassificationModel for overlapping entity types (``channel_types`` set) with one BIO-constrained
    CRF per type (the CRF's channels, run as one batch)."""

    use_crf_by_class = True
    multilabel_by_class = True


def model_class_for(config: CardioNERConfig) -> type[TokenClassificationModel]:
    """The exported class name a config describes: multi-class or multi-label (``channel_types``), with a CRF
    or not. They all build the same model from the same config."""
    if config.channel_types is not None:
        return MultiLabelTokenClassificationModelCRF if config.use_crf else MultiLabelTokenClassificationModel
    return TokenClassificationModelCRF if config.use_crf else TokenClassificationModel
