"""cardioner token-classification models: one self-contained file.

This exact file is copied into every exported model folder and executed by
``AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=True)`` on machines that have only
torch and transformers. It must import nothing but torch, transformers and the Python standard library.

Words. A *word* is a run of subwords decided from the token ids alone, so that training, cardioner's own
inference and the stock ``pipeline("token-classification")`` (which passes only ``input_ids``) agree. Every
vocabulary id gets a class (``build_token_classes``), stored in the model as the buffer ``token_classes``:

- ``TOKEN_CONTINUATION`` (0): continues the current word (``##ing`` in WordPiece; a piece without the
  ``▁``/``Ġ`` word marker in SentencePiece/byte-level BPE);
- ``TOKEN_WORD_START`` (1): starts a word (no ``##``; or carries the word marker);
- ``TOKEN_PUNCTUATION`` (2): a piece made only of punctuation/symbols (or the unknown token): a word of its own,
  and the piece after it starts a new word;
- ``TOKEN_SPECIAL`` (3): [CLS], [SEP], <pad>, ...: in no word;
- ``TOKEN_SPACE`` (4): a bare word marker (``▁``): in no word; the next piece starts a word.

With a WordPiece tokenizer (BERT, ELECTRA, DistilBERT, MiniLM) the words are exactly the pre-tokenizer's
(whitespace and punctuation splits); with SentencePiece and byte-level BPE they are whitespace-delimited pieces
with punctuation split off.
"""

from __future__ import annotations

import cmath
import functools
import inspect
import json
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import TokenClassifierOutput

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
        raise ValueError(f"cardioner needs a fast tokenizer (offsets, word ids); got {type(tokenizer).__name__}")
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


def word_start_mask(token_classes: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
    prev_classes = torch.nn.functional.pad(classes[:, :-1], (1, 0), value=TOKEN_SPECIAL)  # shape: (batch, seq_len)
    prev_in_word = torch.nn.functional.pad(in_word[:, :-1], (1, 0), value=False)
    boundary_before = ~prev_in_word | (prev_classes == TOKEN_PUNCTUATION)
    word_start = in_word & ((classes != TOKEN_CONTINUATION) | boundary_before)
    return in_word, word_start


# ---------------------------------------------------------------------------------------------------------------
# Tag schemes: what the CRF forbids, and which tag a word's continuation subwords carry.
# ---------------------------------------------------------------------------------------------------------------

FORBIDDEN_SCORE = -10000.0  # added to forbidden transitions: exp() of it is 0 in float32, and it never wins a max


def split_tag(label: str) -> tuple[str | None, str]:
    """Split a tag into (prefix, entity type): "B-DISO" -> ("B", "DISO"), "O" -> ("O", ""), "B" -> ("B", "").

    A label outside the BIO/BIOES schemes gets the prefix None (the CRF puts no constraint on it).
    """
    if label == "O":
        return "O", ""
    if label in ("B", "I", "E", "S"):
        return label, ""
    if len(label) > 2 and label[0] in "BIES" and label[1] == "-":
        return label[0], label[2:]
    return None, label


def entities_from_tags(labels: list[str]) -> list[tuple[int, int, str]]:
    """(first, last, type) of each entity in a sequence of typed tags, read leniently: B- and S- open an entity,
    I- and E- extend an open one of their type (else open one), E- and S- close it, O closes it."""
    found: list[list] = []
    is_open = False
    for index, label in enumerate(labels):
        prefix, entity_type = split_tag(label)
        if prefix not in ("B", "I", "E", "S"):
            is_open = False
            continue
        if is_open and prefix in ("I", "E") and found[-1][2] == entity_type:
            found[-1][1] = index
        else:
            found.append([index, index, entity_type])
        is_open = prefix in ("B", "I")
    return [tuple(entity) for entity in found]


def transition_constraints(labels: list[str]) -> tuple[list[bool], list[list[bool]], list[bool]]:
    """Which start, transition and end moves the tag scheme allows (BIO, or BIOES when E-/S- tags exist).

    BIO: I-X only after B-X or I-X (so never at the start, after O or after another type).
    BIOES: after B-X/I-X only I-X or E-X; after O/E-*/S-* only O, B-*, S-*; start only at O/B/S, end only
    after O/E/S. Labels outside the scheme are unconstrained.

    Args:
        labels: the tag of each id, in id order.

    Returns:
        (start_allowed (num_tags,), allowed[from][to] (num_tags, num_tags), end_allowed (num_tags,)).
    """
    parts = [split_tag(label) for label in labels]
    bioes = any(prefix in ("E", "S") for prefix, _ in parts)
    opens = ("B", "I") if bioes else ()  # prefixes after which the entity must continue (BIOES only)

    def allowed(source: tuple[str | None, str] | None, target: tuple[str | None, str]) -> bool:
        target_prefix, target_type = target
        if target_prefix is None or (source is not None and source[0] is None):
            return True
        inside = target_prefix in (("I", "E") if bioes else ("I",))
        if source is None:  # start of the sequence
            return not inside
        source_prefix, source_type = source
        if source_prefix in opens or (not bioes and source_prefix in ("B", "I")):
            if inside:
                return source_type == target_type
            return not bioes
        return not inside

    start_allowed = [allowed(None, part) for part in parts]
    transitions = [[allowed(source, target) for target in parts] for source in parts]
    end_allowed = [not (bioes and prefix in opens) for prefix, _ in parts]
    return start_allowed, transitions, end_allowed


def chain_tags(config) -> list[str]:
    """The tags of one decoding chain: every label (multi-class), or one channel's ``O, B, I`` (BIOES: ``O, B, I,
    E, S``) for a multi-label config (``channel_types`` set), checking that id2label is the channels' typed tags
    ``O, B-T1, I-T1, B-T2, ...`` in channel order."""
    labels = [config.id2label[index] for index in range(config.num_labels)]
    if config.channel_types is None:
        return labels
    types = list(config.channel_types)
    per_channel = (len(labels) - 1) // max(len(types), 1)
    tags = ["O"] + [split_tag(label)[0] or "?" for label in labels[1 : 1 + per_channel]]
    expected = ["O"] + [f"{prefix}-{entity_type}" for entity_type in types for prefix in tags[1:]]
    if not types or per_channel < 2 or labels != expected:
        raise ValueError(f"id2label {labels} is not the channel layout {expected} of channel_types {types}")
    return tags


# ---------------------------------------------------------------------------------------------------------------
# CRF
# ---------------------------------------------------------------------------------------------------------------


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
        # Constraints are plain Python (not buffers): they follow from the labels, never from a checkpoint, so a
        # pytorch-crf state dict loads as is and meta-device loading has nothing to materialise.
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
        """Uniform(-0.1, 0.1) like pytorch-crf (through ``nn.init`` so transformers can skip loaded tensors)."""
        for parameter in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def extra_repr(self) -> str:
        constrained = self.allowed_transitions is not None or self.allowed_start is not None
        return f"num_tags={self.num_tags}, num_channels={self.num_channels}, constrained={constrained}"

    # -- public entry points --------------------------------------------------------------------------------

    def nll(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor | None = None,
        reduction: str = "token_mean",
    ) -> torch.Tensor:
        """Negative log-likelihood of the tag sequences.

        Args:
            emissions: (batch, seq_len, num_tags), or (batch, seq_len, num_channels, num_tags) with channels.
            tags: (batch, seq_len) tag ids, or (batch, seq_len, num_channels); values at masked positions ignored.
            mask: (batch, seq_len) bool, left aligned; None means every position is real.
            reduction: "token_mean" (sum over sequences / number of real tokens [x channels]), "mean" (over
                sequences), "sum", or "none" (per sequence: (batch,) or (batch, num_channels)).

        Returns:
            a scalar, or the unreduced tensor for "none".
        """
        if reduction not in CRF_REDUCTIONS:
            raise ValueError(f"invalid reduction: {reduction!r}; expected one of {CRF_REDUCTIONS}")
        mask = self._check(emissions, mask)
        if tags.shape != emissions.shape[:-1]:
            raise ValueError(f"tags must have shape {tuple(emissions.shape[:-1])}, got {tuple(tags.shape)}")
        flat_emissions, flat_mask, start, transitions, end = self._flatten(emissions, mask)
        flat_tags = self._fold_channels(tags)
        flat_tags = torch.where(flat_mask, flat_tags, torch.zeros_like(flat_tags))  # -100 etc. at padding
        if ((flat_tags < 0) | (flat_tags >= self.num_tags)).any():
            bad = flat_tags[(flat_tags < 0) | (flat_tags >= self.num_tags)]
            raise ValueError(f"tags must lie in [0, {self.num_tags}) at real positions; got {bad[:5].tolist()}")
        if flat_mask.shape[1] == 0:  # no position in any sequence: NLL 0, kept on the graph for backward()
            nll = flat_emissions.sum(dim=(1, 2))  # shape: (rows,)
        else:
            gold = _path_score(flat_emissions, flat_tags, flat_mask, start, transitions, end)  # shape: (rows,)
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
        return paths if self.num_channels is None else self._unfold_channels(paths, emissions.shape[0])

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior probability of each tag at each position (forward-backward).

        Args:
            emissions: (batch, seq_len, num_tags), or (batch, seq_len, num_channels, num_tags) with channels.
            mask: (batch, seq_len) bool, left aligned; None means every position is real.

        Returns:
            the shape of ``emissions``: probabilities summing to 1 over tags at real positions, 0 at padding.
        """
        mask = self._check(emissions, mask)
        flat_emissions, flat_mask, start, transitions, end = self._flatten(emissions, mask)
        log_partition, alphas = _forward_algorithm(flat_emissions, flat_mask, start, transitions, end, keep_alphas=True)
        betas = _backward_algorithm(flat_emissions, flat_mask, transitions, end)
        log_marginals = alphas + betas - log_partition[:, None, None]  # shape: (rows, seq_len, num_tags)
        probabilities = log_marginals.exp() * flat_mask[..., None]
        if self.num_channels is None:
            return probabilities
        batch, seq_len = emissions.shape[:2]
        # shape: (batch * channels, seq_len, tags) -> (batch, seq_len, channels, tags)
        return probabilities.view(batch, self.num_channels, seq_len, self.num_tags).transpose(1, 2)

    # -- helpers ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _viterbi_rows(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        flat_emissions, flat_mask, start, transitions, end = self._flatten(emissions.detach(), mask)
        return _viterbi(flat_emissions, flat_mask, start, transitions, end)  # shape: (rows, seq_len)

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        expected_dim = 3 if self.num_channels is None else 4
        if emissions.dim() != expected_dim:
            raise ValueError(f"emissions must have {expected_dim} dimensions, got shape {tuple(emissions.shape)}")
        if emissions.shape[-1] != self.num_tags:
            raise ValueError(f"expected last dimension of emissions is {self.num_tags}, got {emissions.shape[-1]}")
        if self.num_channels is not None and emissions.shape[2] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels in emissions, got {emissions.shape[2]}")
        if mask is None:
            return torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(emissions.shape[:2])}, got {tuple(mask.shape)}")
        mask = mask.bool()
        if mask.shape[1] > 1 and (mask[:, 1:] & ~mask[:, :-1]).any():
            bad = torch.nonzero((mask[:, 1:] & ~mask[:, :-1]).any(1)).flatten().tolist()
            raise ValueError(f"mask must be left aligned (no real position after padding); rows {bad[:5]} are not")
        return mask

    def _fold_channels(self, tensor: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len, channels, ...) -> (batch * channels, seq_len, ...); identity without channels."""
        if self.num_channels is None:
            return tensor
        moved = tensor.transpose(1, 2)  # shape: (batch, channels, seq_len, ...)
        # explicit sizes, not -1: with no words (seq_len 0) a -1 would be ambiguous
        return moved.reshape(moved.shape[0] * moved.shape[1], *moved.shape[2:])  # (batch * channels, seq_len, ...)

    def _unfold_channels(self, tensor: torch.Tensor, batch: int) -> torch.Tensor:
        """(batch * channels, seq_len, ...) -> (batch, seq_len, channels, ...)."""
        return tensor.view(batch, self.num_channels, *tensor.shape[1:]).transpose(1, 2)

    def _flatten(self, emissions: torch.Tensor, mask: torch.Tensor):
        """Fold channels into rows and return (emissions, mask, start, transitions, end) with constraints applied.

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
        if self.num_channels is None:
            # shape: (tags,) -> (1, tags); (tags, tags) -> (1, tags, tags)
            return emissions, mask, start[None], transitions[None], end[None]
        batch = emissions.shape[0]
        flat_mask = mask[:, None, :].expand(batch, self.num_channels, mask.shape[1])  # shape: (batch, C, seq_len)
        flat_mask = flat_mask.reshape(batch * self.num_channels, mask.shape[1])  # shape: (batch * C, seq_len)

        def rows(parameter: torch.Tensor) -> torch.Tensor:
            expanded = parameter[None].expand(batch, *parameter.shape)  # shape: (batch, C, ...)
            return expanded.reshape(batch * self.num_channels, *parameter.shape[1:])  # shape: (batch * C, ...)

        return self._fold_channels(emissions), flat_mask, rows(start), rows(transitions), rows(end)


CRF_REDUCTIONS = ("token_mean", "mean", "sum", "none")


def _penalty(allowed: list, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    allowed_tensor = torch.tensor(allowed, dtype=torch.bool, device=device)
    return torch.zeros(allowed_tensor.shape, dtype=dtype, device=device).masked_fill(~allowed_tensor, FORBIDDEN_SCORE)


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
    """Log partition function (N,) and, with keep_alphas, the forward log-scores (N, L, T) (emission at t
    included)."""
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


def _viterbi(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    start: torch.Tensor,
    transitions: torch.Tensor,
    end: torch.Tensor,
) -> torch.Tensor:
    """Best paths (N, L); positions past a sequence's end repeat its last tag.

    At padded steps the back-pointers are the identity, so one backtracking pass over all rows at once recovers
    every path (no Python loop over rows).
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


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------

CONFIG_VERSION = 1  # bump when the meaning of a config key changes; old keys keep loading


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


def _per_tag_values(values: list | None) -> list | None:
    """A per-label list of floats, or one such row per channel, as plain Python floats (None stays None)."""
    if values is None:
        return None
    return [[float(v) for v in value] if isinstance(value, (list, tuple)) else float(value) for value in values]


def _flatten_values(values: list) -> list[float]:
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


class CardioNERConfig(PretrainedConfig):
    """Configuration of a cardioner token-classification model (backbone config embedded; nothing fetched).

    Args:
        backbone_config: the backbone's own config as a dict, ``model_type`` included.
        head: token head, a key of TOKEN_HEADS ("linear", "mlp", "bilstm", "cnn", "attention", "fourier_kan",
            "wavelet_kan").
        classifier_hidden_layers: hidden sizes of the mlp head.
        classifier_activation: activation of the mlp head (a transformers ACT2FN name: "gelu", "relu", ...).
        classifier_dropout: dropout before each head layer.
        num_layers_to_use: how many of the backbone's last hidden layers the head reads (1 = the top layer).
        layer_combination: how those layers combine: "concat" or "mix" (learned scalar weights, softmax-normalised).
        use_combined: each token's vector is followed by its sequence's first-token ([CLS]) vector.
        lstm_hidden_size, lstm_num_layers, lstm_dropout: the bilstm head (size per direction; dropout between
            LSTM layers).
        cnn_kernel_sizes, cnn_num_filters: the cnn head (one convolution per kernel size, same-length output).
        attention_hidden_size, attention_num_heads, attention_num_layers: the attention head's transformer blocks.
        num_frequencies: the fourier_kan head's learnable frequencies per input feature.
        wavelet_type, num_wavelets: the wavelet_kan head: "haar", "db2", "db4" or "mixed"; wavelets per feature.
        label_smoothing: label smoothing of the softmax cross-entropy, in [0, 1).
        focal_gamma: focal loss exponent of the softmax cross-entropy (0 = plain cross-entropy).
        use_crf: whether a CRF sits on the emissions (TokenClassificationModelCRF).
        crf_constraints: mask the transitions that the tag scheme (BIO/BIOES, read from id2label) forbids.
        crf_reduction: how the CRF NLL is reduced: "token_mean" (per word), "mean" (per sequence), "sum".
        constrained_decoding: models without a CRF (softmax, multi-label sigmoid) decode each word sequence by
            Viterbi under the tag scheme's constraints (``transition_constraints``: I-X only after B-X or I-X, ...)
            over their word scores (log-softmax; the sigmoid model's logits against its thresholds) instead of
            an independent argmax per word; a fragment such as ``B I O I`` then becomes one entity or two
            well-formed ones, whichever scores higher. False: the argmax per word.
        class_weights: per-label weights of the softmax cross-entropy, or None; multi-label sigmoid model: one
            row per channel of per-tag weights of the BCE (a word's loss in a channel is weighted by its gold tag).
        freeze_backbone: the backbone gets no gradient.
        label_all_subwords: the softmax loss uses every labelled subword (the CRF always uses word starts only).
        channel_types: multi-label models only: the entity type of each channel (one O/B/I chain per type, in this
            order); id2label then holds the typed tags ``O, B-T1, I-T1, B-T2, ...`` of the channels in order.
        thresholds: multi-label sigmoid model: each channel's decision threshold in (0, 1); None means 0.5.
        tag_priors: the frequency of each tag in the training data (same layout as ``class_weights``), or None.
            A fresh head starts with its output biases at these priors (log p for softmax and CRF scores, the
            log-odds for the multi-label sigmoid), so training begins from the tag distribution instead of a
            uniform guess (Lin et al. 2017, "Focal loss", §3.3); without it they start at 0. Only initialisation
            reads it: a loaded model keeps its trained biases.
        cardioner_version: version of cardioner that wrote the model (set on export).
        config_version: version of this config's layout.
        **kwargs: PretrainedConfig arguments (id2label, label2id, ...).
    """

    model_type = "cardioner"

    def __init__(
        self,
        backbone_config: dict | None = None,
        head: str = "linear",
        classifier_hidden_layers: tuple[int, ...] | list[int] = (512, 256),
        classifier_activation: str = "gelu",
        classifier_dropout: float = 0.1,
        num_layers_to_use: int = 1,
        layer_combination: str = "concat",
        use_combined: bool = False,
        lstm_hidden_size: int = 256,
        lstm_num_layers: int = 1,
        lstm_dropout: float = 0.1,
        cnn_kernel_sizes: tuple[int, ...] | list[int] = (3, 4, 5),
        cnn_num_filters: int = 128,
        attention_hidden_size: int = 256,
        attention_num_heads: int = 4,
        attention_num_layers: int = 1,
        num_frequencies: int = 8,
        wavelet_type: str = "mixed",
        num_wavelets: int = 8,
        label_smoothing: float = 0.0,
        focal_gamma: float = 0.0,
        use_crf: bool = False,
        crf_constraints: bool = True,
        crf_reduction: str = "token_mean",
        constrained_decoding: bool = True,
        class_weights: list[float] | None = None,
        freeze_backbone: bool = False,
        label_all_subwords: bool = False,
        channel_types: list[str] | None = None,
        thresholds: list[float] | None = None,
        tag_priors: list[float] | None = None,
        cardioner_version: str | None = None,
        config_version: int = CONFIG_VERSION,
        **kwargs,
    ) -> None:
        if backbone_config is not None and not isinstance(backbone_config, dict):
            backbone_config = backbone_config.to_dict()  # a PretrainedConfig
        if backbone_config is not None and "model_type" not in backbone_config:
            raise ValueError(f"backbone_config needs a 'model_type'; got keys {sorted(backbone_config)[:10]}")
        if head not in TOKEN_HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {sorted(TOKEN_HEADS)}")
        if crf_reduction not in ("token_mean", "mean", "sum"):
            raise ValueError(f"invalid crf_reduction {crf_reduction!r}; expected 'token_mean', 'mean' or 'sum'")
        if not 0.0 <= classifier_dropout < 1.0:
            raise ValueError(f"classifier_dropout must be in [0, 1), got {classifier_dropout}")
        self.backbone_config = backbone_config
        self.head = head
        self.classifier_hidden_layers = [int(size) for size in classifier_hidden_layers]
        self.classifier_activation = classifier_activation
        self.classifier_dropout = float(classifier_dropout)
        self.num_layers_to_use = int(num_layers_to_use)
        self.layer_combination = layer_combination
        self.use_combined = bool(use_combined)
        self.lstm_hidden_size = int(lstm_hidden_size)
        self.lstm_num_layers = int(lstm_num_layers)
        self.lstm_dropout = float(lstm_dropout)
        self.cnn_kernel_sizes = [int(size) for size in cnn_kernel_sizes]
        self.cnn_num_filters = int(cnn_num_filters)
        self.attention_hidden_size = int(attention_hidden_size)
        self.attention_num_heads = int(attention_num_heads)
        self.attention_num_layers = int(attention_num_layers)
        self.num_frequencies = int(num_frequencies)
        self.wavelet_type = wavelet_type
        self.num_wavelets = int(num_wavelets)
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = float(focal_gamma)
        self.use_crf = bool(use_crf)
        self.crf_constraints = bool(crf_constraints)
        self.crf_reduction = crf_reduction
        self.constrained_decoding = bool(constrained_decoding)
        self.class_weights = _per_tag_values(class_weights)  # one weight per label; multi-label: one row per channel
        self.tag_priors = _per_tag_values(tag_priors)
        if self.tag_priors is not None and not all(0.0 < p < 1.0 for p in _flatten_values(self.tag_priors)):
            raise ValueError(f"tag_priors must lie in (0, 1), got {self.tag_priors}")
        self.freeze_backbone = bool(freeze_backbone)
        self.label_all_subwords = bool(label_all_subwords)
        self.channel_types = None if channel_types is None else [str(t) for t in channel_types]
        self.thresholds = None if thresholds is None else [float(t) for t in thresholds]
        if self.thresholds is not None and not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must lie in (0, 1), got {self.thresholds}")
        check_head_settings(self)
        self.cardioner_version = cardioner_version
        self.config_version = int(config_version)
        super().__init__(**kwargs)
        if self.channel_types is not None:
            tags = chain_tags(self)  # validates the channel layout of id2label
            if self.thresholds is not None and len(self.thresholds) != len(self.channel_types):
                raise ValueError(f"{len(self.thresholds)} thresholds for {len(self.channel_types)} channels")
        for name in ("class_weights", "tag_priors"):
            values = getattr(self, name)
            if values is None:
                continue
            if self.channel_types is not None:
                shape = [len(row) if isinstance(row, list) else 0 for row in values]
                if shape != [len(tags)] * len(self.channel_types):
                    raise ValueError(f"{name} must be {len(self.channel_types)} rows of {len(tags)} values (per "
                                     f"channel and tag), got {values}")
            elif len(values) != self.num_labels or any(isinstance(value, list) for value in values):
                raise ValueError(f"{name} has {len(values)} values for {self.num_labels} labels")

    def build_backbone_config(self) -> PretrainedConfig:
        """The embedded backbone config as a transformers config object.

        Without the backbone's own dtype: the backbone takes the dtype the whole model is built or loaded in
        (``from_pretrained(..., dtype=torch.bfloat16)``, an export saved after ``.to(torch.float16)``), not
        the one it was first downloaded in, or the backbone and the head would disagree.
        """
        if self.backbone_config is None:
            raise ValueError("CardioNERConfig.backbone_config is None: build models with from_backbone()")
        settings = {key: value for key, value in self.backbone_config.items() if key not in ("dtype", "torch_dtype")}
        return AutoConfig.for_model(**settings)


# ---------------------------------------------------------------------------------------------------------------
# Token heads: hidden states (batch, seq_len, hidden) -> emissions (batch, seq_len, num_outputs)
# ---------------------------------------------------------------------------------------------------------------


class LinearHead(nn.Module):
    """Dropout and one linear layer."""

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(input_size, num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden_states))


class MLPHead(nn.Module):
    """(dropout, linear, activation) per ``classifier_hidden_layers``, then dropout and a linear output."""

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig) -> None:
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
    """A bidirectional LSTM over the real tokens (packed: padding never enters it), then dropout and a linear layer.

    Uses ``lstm_hidden_size`` (per direction), ``lstm_num_layers`` and ``lstm_dropout`` (between LSTM layers).
    """

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.lstm = nn.LSTM(
            input_size, config.lstm_hidden_size, num_layers=config.lstm_num_layers, batch_first=True,
            bidirectional=True, dropout=config.lstm_dropout if config.lstm_num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(2 * config.lstm_hidden_size, num_outputs)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens, token_mask = compact_real_tokens(self.dropout(hidden_states), attention_mask)  # (b, n, input)
        lengths = token_mask.sum(1).clamp(min=1).cpu()  # shape: (batch,); an empty row runs on one padding token
        packed = nn.utils.rnn.pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=tokens.shape[1])
        # output shape: (batch, n, 2 * lstm_hidden_size)
        return self.classifier(self.dropout(expand_real_tokens(output, attention_mask)))


class CNNHead(nn.Module):
    """Parallel 1-D convolutions over the real tokens (``cnn_kernel_sizes``, ``cnn_num_filters`` each), padded to
    keep the length, activation, then dropout and a linear layer over the concatenated filters.

    Padding tokens are removed first and the convolution pads with zeros, so a real token never sees padding.
    """

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig) -> None:
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
            self.activation(convolution(nn.functional.pad(tokens, ((size - 1) // 2, size // 2))))  # (b, filters, n)
            for size, convolution in zip(self.kernel_sizes, self.convolutions, strict=True)
        ]
        features = torch.cat(features, dim=1).transpose(1, 2)  # shape: (batch, n, filters * kernels)
        return self.classifier(self.dropout(expand_real_tokens(features, attention_mask)))


class AttentionHead(nn.Module):
    """A projection to ``attention_hidden_size``, ``attention_num_layers`` transformer blocks (multi-head
    self-attention with padded keys masked, layer norm, GELU MLP), then dropout and a linear layer."""

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig) -> None:
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


def _polynomial_roots(coefficients: list[float]) -> list[complex]:
    """Complex roots of ``sum_k coefficients[k] * y**k`` (Durand–Kerner iteration; for small degrees).

    Args:
        coefficients: lowest degree first; the last must be non-zero.

    Returns:
        the degree's number of roots.
    """
    degree = len(coefficients) - 1
    monic = [c / coefficients[-1] for c in coefficients]
    roots = [complex(0.4, 0.9) ** k for k in range(degree)]
    for _ in range(200):
        for i, root in enumerate(roots):
            value = sum(c * root**k for k, c in enumerate(monic))
            roots[i] = root - value / math.prod(root - other for j, other in enumerate(roots) if j != i)
    return roots


def _multiply(first: list[complex], second: list[complex]) -> list[complex]:
    """Product of two polynomials (coefficient lists, lowest degree first)."""
    product = [0j] * (len(first) + len(second) - 1)
    for i, a in enumerate(first):
        for j, b in enumerate(second):
            product[i + j] += a * b
    return product


@functools.cache
def daubechies_filter(num_vanishing_moments: int) -> tuple[float, ...]:
    """Scaling (low-pass) filter h of the Daubechies wavelet dbN (db1 = Haar): 2N taps, minimum phase, sum sqrt(2).

    Daubechies' construction by spectral factorisation: H(z) = sqrt(2) ((1 + 1/z) / 2)^N Q(1/z), where
    |Q|^2 on the unit circle is P(sin^2(w/2)) with P(y) = sum_{k<N} C(N-1+k, k) y^k. Each root y of P gives a
    pair z, 1/z of roots (y = (2 - z - 1/z) / 4); Q keeps the one inside the unit circle.
    """
    if num_vanishing_moments < 1:
        raise ValueError(f"a Daubechies wavelet needs >= 1 vanishing moment, got {num_vanishing_moments}")
    n = num_vanishing_moments
    polynomial = [1 + 0j]  # in powers of 1/z, lowest first
    for y in _polynomial_roots([float(math.comb(n - 1 + k, k)) for k in range(n)]):
        middle = 2 - 4 * y  # z + 1/z
        z = min(((middle + s * cmath.sqrt(middle * middle - 4)) / 2 for s in (1, -1)), key=abs)
        polynomial = _multiply(polynomial, [1, -z])
    for _ in range(n):
        polynomial = _multiply(polynomial, [1, 1])
    scale = math.sqrt(2) / sum(c.real for c in polynomial)
    return tuple(c.real * scale for c in polynomial)


WAVELET_VANISHING_MOMENTS = {"haar": 1, "db2": 2, "db4": 4}  # wavelet name -> N of dbN
WAVELET_NAMES = tuple(WAVELET_VANISHING_MOMENTS)
WAVELET_LEVELS = 6  # wavelet tables hold 2**6 points per unit of support


def wavelet_filter(name: str) -> tuple[float, ...]:
    """Scaling filter of a wavelet by name ("haar", "db2", "db4"): see ``daubechies_filter``."""
    if name not in WAVELET_VANISHING_MOMENTS:
        raise ValueError(f"unknown wavelet {name!r}; expected one of {sorted(WAVELET_VANISHING_MOMENTS)}")
    return daubechies_filter(WAVELET_VANISHING_MOMENTS[name])


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
    two-scale relation, and psi(x) = sqrt(2) sum_k g_k phi(2x - k) with g_k = (-1)^k h_{L-1-k}. Pure Python, so
    it runs the same inside transformers' meta-device model construction.

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
    """Kolmogorov–Arnold head: for each input feature a learnable one-dimensional function (a weighted sum of
    ``num_basis`` basis functions of the layer-normed feature), summed into every output, plus a residual linear
    path on the features themselves. Subclasses define the basis.

    Args:
        input_size, num_outputs, config: as for every head.
        num_basis: basis functions per input feature.
    """

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig, num_basis: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.norm = nn.LayerNorm(input_size)
        self.residual = nn.Linear(input_size, num_outputs)
        self.classifier = nn.Linear(input_size * num_basis, num_outputs)  # the basis functions' weights

    def basis(self, features: torch.Tensor) -> torch.Tensor:
        """Basis functions of each feature: (..., input_size) -> (..., input_size, num_basis)."""
        raise NotImplementedError

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.dropout(hidden_states)
        values = self.basis(self.norm(features))  # shape: (batch, seq_len, input_size, num_basis)
        return self.residual(features) + self.classifier(values.flatten(-2))  # shape: (batch, seq_len, outputs)


class FourierKANHead(KANHead):
    """KAN head with a Fourier basis: cos(f x) and sin(f x) for ``num_frequencies`` learnable frequencies per input
    feature (starting at 1, 2, ..., num_frequencies)."""

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig) -> None:
        super().__init__(input_size, num_outputs, config, num_basis=2 * config.num_frequencies)
        self.num_frequencies = config.num_frequencies
        self.frequency_offsets = nn.Parameter(torch.zeros(input_size, config.num_frequencies))  # learned shifts

    def basis(self, features: torch.Tensor) -> torch.Tensor:
        start = torch.arange(1, self.num_frequencies + 1, device=features.device, dtype=features.dtype)
        angles = features[..., None] * (start + self.frequency_offsets)  # shape: (..., input_size, frequencies)
        return torch.cat([angles.cos(), angles.sin()], dim=-1)  # shape: (..., input_size, 2 * frequencies)


class WaveletKANHead(KANHead):
    """KAN head with a wavelet basis: ``num_wavelets`` mother wavelets psi((x - t) / s) per input feature, each
    with a learnable translation t (starting evenly over [-2, 2]) and scale s.

    ``wavelet_type`` is "haar", "db2", "db4", or "mixed" (the three in turn). A wavelet is its tabulated function
    (``wavelet_functions``, from the filter coefficients by the cascade algorithm), linearly interpolated, its
    support stretched over [t - s, t + s].
    """

    def __init__(self, input_size: int, num_outputs: int, config: CardioNERConfig) -> None:
        super().__init__(input_size, num_outputs, config, num_basis=config.num_wavelets)
        names = WAVELET_NAMES if config.wavelet_type == "mixed" else (config.wavelet_type,)
        count = config.num_wavelets
        self._kinds = [index % len(names) for index in range(count)]  # table row of each wavelet
        tables = [wavelet_functions(name, WAVELET_LEVELS)[1] for name in names]
        width = max(len(table) for table in tables)
        # Plain lists, not buffers: they follow from the config (like the CRF's constraints), never from weights.
        self._table = [list(table) + [0.0] * (width - len(table)) for table in tables]
        self._support = [len(wavelet_filter(names[kind])) - 1 for kind in self._kinds]  # support width in units
        self._starts = [-2.0 + 4.0 * index / (count - 1) if count > 1 else 0.0 for index in range(count)]
        self._start_scale = min(2.0, 8.0 / count)
        self.translation_offsets = nn.Parameter(torch.zeros(input_size, count))  # learned: t = start + offset
        self.log_scales = nn.Parameter(torch.zeros(input_size, count))  # learned: s = start scale * exp(log_scale)

    def basis(self, features: torch.Tensor) -> torch.Tensor:
        device, dtype = features.device, features.dtype
        table = torch.tensor(self._table, device=device, dtype=dtype)  # shape: (types, points)
        kinds = torch.tensor(self._kinds, device=device)  # shape: (wavelets,)
        last = torch.tensor(self._support, device=device, dtype=dtype) * 2**WAVELET_LEVELS  # last grid point
        translations = torch.tensor(self._starts, device=device, dtype=dtype) + self.translation_offsets  # (in, K)
        scales = self._start_scale * self.log_scales.exp()  # shape: (input_size, wavelets)
        unit = (features[..., None] - translations) / scales  # shape: (..., input_size, wavelets); support [-1, 1]
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
LAYER_COMBINATIONS = ("concat", "mix")


def check_head_settings(config: CardioNERConfig) -> None:
    """Raise ValueError, naming the key and its value, for head settings that cannot build a model."""
    for name in ("num_layers_to_use", "lstm_hidden_size", "lstm_num_layers", "cnn_num_filters", "attention_hidden_size",
                 "attention_num_heads", "attention_num_layers", "num_frequencies", "num_wavelets"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)!r}")
    if config.layer_combination not in LAYER_COMBINATIONS:
        raise ValueError(f"invalid layer_combination {config.layer_combination!r}; expected one of {LAYER_COMBINATIONS}")
    if config.wavelet_type not in (*WAVELET_NAMES, "mixed"):
        raise ValueError(f"invalid wavelet_type {config.wavelet_type!r}; expected one of {(*WAVELET_NAMES, 'mixed')}")
    if not config.cnn_kernel_sizes or min(config.cnn_kernel_sizes) < 1:
        raise ValueError(f"cnn_kernel_sizes must be positive integers, got {config.cnn_kernel_sizes}")
    if config.attention_hidden_size % config.attention_num_heads:
        raise ValueError(f"attention_hidden_size ({config.attention_hidden_size}) must be a multiple of "
                         f"attention_num_heads ({config.attention_num_heads})")
    if not 0.0 <= config.lstm_dropout < 1.0:
        raise ValueError(f"lstm_dropout must be in [0, 1), got {config.lstm_dropout}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.focal_gamma < 0:
        raise ValueError(f"focal_gamma must be >= 0, got {config.focal_gamma}")
    if (config.label_smoothing or config.focal_gamma) and (config.use_crf or config.channel_types is not None):
        raise ValueError(f"label_smoothing ({config.label_smoothing}) and focal_gamma ({config.focal_gamma}) shape the "
                         "softmax loss; a CRF or multi-label model would ignore them: set them to 0")


def compact_real_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The real tokens of each row moved to the front, in order (sequence heads then never see padding).

    Args:
        hidden_states: (batch, seq_len, size).
        attention_mask: (batch, seq_len), 1 for real tokens.

    Returns:
        (tokens (batch, max_real, size), left-aligned mask (batch, max_real) bool).
    """
    positions, token_mask = gather_positions(attention_mask.bool())  # shape: (batch, max_real)
    if positions.shape[1] == 0:  # no real token in the batch: one masked slot keeps every head's shapes valid
        positions, token_mask = positions.new_zeros(len(positions), 1), token_mask.new_zeros(len(token_mask), 1)
    return gather_rows(hidden_states, positions), token_mask


def expand_real_tokens(features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Undo ``compact_real_tokens``: (batch, max_real, size) -> (batch, seq_len, size), zeros at padding."""
    real = attention_mask.bool()
    slot = (real.long().cumsum(1) - 1).clamp(min=0)  # shape: (batch, seq_len): rank among the row's real tokens
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

    def __init__(self, backbone_config: PretrainedConfig, config: CardioNERConfig) -> None:
        super().__init__()
        self.num_layers = config.num_layers_to_use
        self.layer_combination = config.layer_combination
        self.use_combined = config.use_combined
        available = int(getattr(backbone_config, "num_hidden_layers", 0) or 0) + 1  # embeddings + every layer
        if self.num_layers > available > 1:
            raise ValueError(f"num_layers_to_use={self.num_layers}, but the backbone has {available} hidden states "
                             f"(embeddings + {available - 1} layers)")
        if self.num_layers > 1 and self.layer_combination == "mix":
            self.layer_weights = nn.Parameter(torch.zeros(self.num_layers))  # softmax -> equal weights at start
            self.layer_gain = nn.Parameter(torch.ones(()))
        layers = self.num_layers if self.layer_combination == "concat" else 1
        self.output_size = backbone_config.hidden_size * layers * (2 if self.use_combined else 1)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Args:
            hidden_states: ``backbone_features``: (batch, seq_len, hidden), or (batch, seq_len, num_layers, hidden)
                when num_layers_to_use > 1.
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
                features = self.layer_gain * (hidden_states * weights[:, None]).sum(2)  # shape: (b, seq, hidden)
            else:
                features = hidden_states.flatten(2)  # shape: (batch, seq_len, num_layers * hidden)
        if self.use_combined:
            first = features[:, :1].expand_as(features)  # shape: (batch, seq_len, size)
            features = torch.cat([features, first], dim=-1)  # shape: (batch, seq_len, 2 * size)
        return features


def softmax_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy with optional class weights, label smoothing and focal modulation, -100 targets ignored.

    The focal loss multiplies each token's (weighted, smoothed) cross-entropy by (1 - p_target)^gamma; the mean is
    over the weights of the counted targets, as ``cross_entropy`` takes it, so gamma = 0 is plain cross-entropy.

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
    target_probability = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1).exp()  # shape: (counted,)
    total = weight[targets].sum() if weight is not None else torch.tensor(float(targets.numel()), device=logits.device)
    return ((1 - target_probability) ** focal_gamma * losses).sum() / total.clamp(min=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class CardioNERTokenClassifierOutput(TokenClassifierOutput):
    """TokenClassifierOutput plus ``emissions``: the raw head output (``logits`` are decoded ones in eval), and for
    multi-label models in eval mode ``channel_logits`` (batch, seq_len, channels, tags): argmax = each channel's tag."""

    emissions: torch.FloatTensor | None = None
    channel_logits: torch.FloatTensor | None = None


class Words:
    """Where the words of a batch are (from ``word_start_mask``), gathered into contiguous sequences.

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
    mask = torch.arange(max_count, device=select.device)[None, :] < counts[:, None]  # shape: (batch, max_count)
    return positions * mask, mask


def gather_rows(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """values (batch, seq_len, ...) at positions (batch, k) -> (batch, k, ...)."""
    index = positions.view(*positions.shape, *([1] * (values.dim() - 2)))  # shape: (batch, k, 1...)
    return values.gather(1, index.expand(*positions.shape, *values.shape[2:]))


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
    # in half precision top + margin can round back to top (4.0 + 1e-3 == 4.0 in bf16): at least the next value
    raised = torch.maximum(top + margin, torch.nextafter(top, torch.full_like(top, math.inf)))
    return rows.scatter(-1, index, torch.where(needs, raised, current))


class CardioNERPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading rules shared by cardioner models."""

    config_class = CardioNERConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True

    def _init_weights(self, module: nn.Module) -> None:
        # Goes through nn.init, which transformers guards so that loaded tensors are never re-initialised.
        if isinstance(module, CRF):
            module.reset_parameters()
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, PreTrainedModel) or module is self:
            return
        elif hasattr(self, "backbone"):
            # transformers 4.x walks the whole tree with this method: backbone modules use the backbone's rules
            self.backbone._init_weights(module)


class TokenClassificationModel(CardioNERPreTrainedModel):
    """Backbone + token head; softmax over tags per token, decisions per word.

    In eval mode ``logits`` are made for the stock pipeline: each word's continuation subwords get
    ``I-<type>`` of the word's tag (O stays O), so ``aggregation_strategy="simple"`` returns whole words;
    ``emissions`` keep the raw head output.
    """

    def __init__(self, config: CardioNERConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = _build_backbone(config.build_backbone_config())
        self.head_input = HeadInput(self.backbone.config, config)  # layers / [CLS] combined; no weights by default
        self.head = TOKEN_HEADS[config.head](self.head_input.output_size, self._num_outputs(config), config)
        vocab_size = max(int(getattr(self.backbone.config, "vocab_size", 0) or 0), 1)
        # TOKEN_* class of each vocabulary id; -1 until set_token_classes() fills it (checked in forward).
        self.register_buffer("token_classes", torch.full((vocab_size,), -1, dtype=torch.int8), persistent=True)
        labels = [config.id2label[index] for index in range(config.num_labels)]
        self._continuation_tag = _continuation_tags(labels)  # tag id -> tag id of its continuation subwords
        self._tag_type = _tag_types(labels)  # tag id -> entity type number; -1 for O and unknown prefixes
        self._outside_tag = config.label2id.get("O") if config.label2id else None
        self._backbone_takes_token_types = "token_type_ids" in inspect.signature(self.backbone.forward).parameters
        self._build_decoder(config, chain_tags(config))
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.post_init()
        if config.tag_priors is not None:
            self._init_output_biases(torch.tensor(config.tag_priors, dtype=torch.float64))

    def _num_outputs(self, config: CardioNERConfig) -> int:
        """How many scores the head emits per token (one per label here)."""
        return config.num_labels

    def _init_output_biases(self, priors: torch.Tensor) -> None:
        """Set the head's output biases from the tag priors (``config.tag_priors``); its other parameters keep
        their initialisation. On the meta device (loading) this is a no-op: loaded weights replace it."""
        bias = self.head.classifier.bias  # every head ends in a linear ``classifier`` (KAN: + a residual linear)
        with torch.no_grad():
            bias.copy_(self._prior_scores(priors.clamp(1e-6, 1 - 1e-6)).flatten().to(bias.dtype))

    def _prior_scores(self, priors: torch.Tensor) -> torch.Tensor:
        """Output scores whose softmax is ``priors`` (num_labels,)."""
        return priors.log()

    def _build_decoder(self, config: CardioNERConfig, labels: list[str]) -> None:
        """Add what sits on the emissions (the CRF in the subclass; here the tag scheme's constraints when decoding
        is constrained); ``labels``: the tags of one decoding chain (``chain_tags``)."""
        self.decoding_constraints = transition_constraints(labels) if config.constrained_decoding else None

    # -- building ---------------------------------------------------------------------------------------------

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
            **head_settings: CardioNERConfig arguments (head, use_crf, classifier_dropout, ...).

        Returns:
            TokenClassificationModelCRF when ``use_crf`` (or called on it), else TokenClassificationModel.
        """
        id2label = {int(index): label for index, label in id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"id2label ids must be 0..n-1, got {sorted(id2label)}")
        use_crf = bool(head_settings.pop("use_crf", issubclass(cls, TokenClassificationModelCRF)))
        if issubclass(cls, MultiLabelTokenClassificationModel) and head_settings.get("channel_types") is None:
            head_settings["channel_types"] = sorted({split_tag(tag)[1] for tag in id2label.values()} - {""})
        backbone = _load_pretrained_backbone(name_or_path)
        config = CardioNERConfig(
            backbone_config=backbone.config.to_dict(),
            id2label=id2label,
            label2id={label: index for index, label in id2label.items()},
            use_crf=use_crf,
            **head_settings,
        )
        model = model_class_for(config)(config)
        missing, unexpected = model.backbone.load_state_dict(backbone.state_dict(), strict=False)
        if missing:
            raise ValueError(f"backbone weights from {name_or_path} miss {len(missing)} keys, e.g. {missing[:5]}")
        model.set_token_classes(tokenizer)
        return model

    def set_token_classes(self, tokenizer) -> None:
        """Fill the word-segmentation table from the tokenizer (see ``build_token_classes``)."""
        table = build_token_classes(tokenizer)
        size = max(table.shape[0], self.token_classes.shape[0])
        full = torch.full((size,), TOKEN_SPECIAL, dtype=torch.int8)
        full[: table.shape[0]] = table
        self.token_classes = full.to(self.token_classes.device)

    # -- forward ----------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        hidden_states: torch.Tensor | None = None,
        **kwargs,
    ) -> CardioNERTokenClassifierOutput:
        """Emissions per token; loss when labels are given; pipeline-ready logits in eval mode.

        Args:
            input_ids: (batch, seq_len).
            attention_mask: (batch, seq_len), 1 for real tokens; None means all real.
            token_type_ids: (batch, seq_len) or None (dropped for backbones without them).
            labels: (batch, seq_len) tag ids at word starts (and, with label_all_subwords, other subwords),
                -100 elsewhere.
            hidden_states: precomputed ``backbone_features`` of these inputs (cached features of a frozen
                backbone); the backbone is then not run. Words still come from ``input_ids``.
            **kwargs: ignored (what pipelines may pass along).

        Returns:
            CardioNERTokenClassifierOutput: loss (scalar, with labels), logits and emissions
            (batch, seq_len, num_labels).
        """
        attention_mask = self._check_inputs(input_ids, attention_mask, labels)
        emissions = self._emissions(input_ids, attention_mask, token_type_ids, hidden_states)  # shape: (b, seq, tags)
        words = self._words(input_ids, attention_mask)
        loss = self._loss(emissions, labels, words) if labels is not None else None
        outputs = {"logits": emissions}
        if not self.training:
            with torch.no_grad():
                outputs = self._eval_outputs(emissions, words)
        return CardioNERTokenClassifierOutput(loss=loss, emissions=emissions, **outputs)

    @torch.no_grad()
    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[list[int]]:
        """Tag id of each word, in word order (Viterbi with a CRF, argmax otherwise).

        Args:
            input_ids, attention_mask, token_type_ids: as in ``forward``.

        Returns:
            one list per example, one tag id per word (words as ``word_start_mask`` defines them).
        """
        attention_mask = self._check_inputs(input_ids, attention_mask, None)
        emissions = self._emissions(input_ids, attention_mask, token_type_ids)
        words = self._words(input_ids, attention_mask)
        word_tags, _ = self._decode_words(emissions, words)
        lengths = words.word_mask.sum(1).tolist()
        return [row[:length] for row, length in zip(word_tags.tolist(), lengths, strict=True)]

    @torch.no_grad()
    def decode_spans(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        offset_mapping: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[list[tuple[int, int, str]]]:
        """Entities with character offsets; a multi-label model gives each type's entities, overlaps included.

        Args:
            input_ids, attention_mask, token_type_ids: as in ``forward``.
            offset_mapping: (batch, seq_len, 2) character offsets of each token, from the tokenizer called with
                ``return_offsets_mapping=True``.

        Returns:
            one sorted list per example of (start, end, entity type); a word spans its first subword's start to its
            last subword's end; tags are read leniently (an I- without its B- starts an entity).
        """
        if offset_mapping is None or tuple(offset_mapping.shape) != (*input_ids.shape, 2):
            shape = None if offset_mapping is None else tuple(offset_mapping.shape)
            raise ValueError(f"offset_mapping must have shape {(*input_ids.shape, 2)}, got {shape}")
        word_tags = self.decode(input_ids, attention_mask, token_type_ids)
        words = self._words(input_ids, self._check_inputs(input_ids, attention_mask, None))
        num_chains = 1 if self.config.channel_types is None else len(self.config.channel_types)
        tags_per_channel = len(chain_tags(self.config))
        results = []
        for b, tags in enumerate(word_tags):
            word_chars = [[-1, -1] for _ in tags]  # (start, end) characters of each word
            for position in torch.nonzero(words.in_word[b]).flatten().tolist():
                start, end = offset_mapping[b, position].tolist()
                chars = word_chars[int(words.word_index[b, position])]
                chars[0] = start if chars[0] < 0 else chars[0]
                chars[1] = end
            spans = set()
            for channel in range(num_chains):
                if self.config.channel_types is None:
                    labels = [self.config.id2label[int(tag)] for tag in tags]
                else:  # channel tag k of channel c is the typed label 1 + c * (T - 1) + k - 1
                    labels = [self.config.id2label[1 + channel * (tags_per_channel - 1) + row[channel] - 1]
                              if row[channel] > 0 else "O" for row in tags]
                for first, last, entity_type in entities_from_tags(labels):
                    spans.add((word_chars[first][0], word_chars[last][1], entity_type))
            results.append(sorted(spans))
        return results

    # -- steps ------------------------------------------------------------------------------------------------

    def _check_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor | None
    ) -> torch.Tensor:
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got {None if input_ids is None else tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
        if labels is not None and labels.shape[:2] != input_ids.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
        if int(self.token_classes[0]) < 0:
            raise ValueError("token_classes is not set: build the model with from_backbone() or call set_token_classes()")
        return attention_mask

    def backbone_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the head reads from the backbone (the one place the backbone runs; cached when it is frozen).

        Returns:
            (batch, seq_len, hidden): the backbone's last hidden states; with ``num_layers_to_use`` N > 1,
            (batch, seq_len, N, hidden): its last N hidden states, the top one as the single-layer model sees it.
        """
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._backbone_takes_token_types:
            inputs["token_type_ids"] = token_type_ids
        num_layers = self.config.num_layers_to_use
        if num_layers == 1:
            return self.backbone(**inputs)[0]  # shape: (batch, seq_len, hidden)
        outputs = self.backbone(**inputs, output_hidden_states=True)
        if len(outputs.hidden_states) < num_layers:
            raise ValueError(f"num_layers_to_use={num_layers}, but the backbone returned {len(outputs.hidden_states)}"
                             " hidden states")
        layers = (*outputs.hidden_states[-num_layers:-1], outputs[0])  # top: after a final norm, where there is one
        return torch.stack(layers, dim=2)  # shape: (batch, seq_len, num_layers, hidden)

    def _emissions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if hidden_states is None:
            hidden_states = self.backbone_features(input_ids, attention_mask, token_type_ids)
        features = self.head_input(hidden_states, attention_mask)  # shape: (batch, seq_len, head input size)
        return self.head(features, attention_mask)  # shape: (batch, seq_len, num_labels)

    def _words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Words:
        table = self.token_classes
        in_table = input_ids < table.shape[0]
        classes = table[input_ids.clamp(0, table.shape[0] - 1)]  # shape: (batch, seq_len)
        classes = torch.where(in_table, classes, torch.full_like(classes, TOKEN_SPECIAL))
        in_word, word_start = word_start_mask(classes, attention_mask)
        gap = attention_mask.bool() & ~in_word & (classes != TOKEN_SPECIAL)
        return Words(in_word, word_start, gap)

    def _loss(self, emissions: torch.Tensor, labels: torch.Tensor, words: Words) -> torch.Tensor:
        weight = None
        if self.config.class_weights is not None:
            weight = torch.tensor(self.config.class_weights, dtype=emissions.dtype, device=emissions.device)
        if not self.config.label_all_subwords:
            labels = torch.where(words.word_start, labels, torch.full_like(labels, -100))
        return softmax_loss(
            emissions.reshape(-1, self.num_labels),  # shape: (batch * seq_len, num_labels)
            labels.reshape(-1),  # shape: (batch * seq_len,)
            weight=weight,
            label_smoothing=self.config.label_smoothing,
            focal_gamma=self.config.focal_gamma,
        )

    def _decode_words(self, emissions: torch.Tensor, words: Words) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag of each word (batch, max_words) and its logits (batch, max_words, num_labels), argmax = tag.

        Multi-label: (batch, max_words, channels) and (batch, max_words, channels, tags). With
        ``constrained_decoding`` the tags are the best path the tag scheme allows (``scheme_viterbi``) and the
        logits are raised so that their argmax is that path.
        """
        word_logits = gather_rows(emissions, words.positions)  # shape: (batch, max_words[, C], num_tags)
        if self.decoding_constraints is None:
            return word_logits.argmax(-1), word_logits
        word_tags = scheme_viterbi(self._path_scores(word_logits.detach()), words.word_mask, self.decoding_constraints)
        return word_tags, force_argmax(word_logits, word_tags)

    def _path_scores(self, word_logits: torch.Tensor) -> torch.Tensor:
        """What constrained decoding sums along a path: each word's log-probabilities (softmax)."""
        return word_logits.log_softmax(-1)

    def _eval_outputs(self, emissions: torch.Tensor, words: Words) -> dict[str, torch.Tensor]:
        """Eval-mode outputs: ``logits`` for the stock pipeline (multi-label models add ``channel_logits``)."""
        word_tags, word_logits = self._decode_words(emissions, words)
        return {"logits": self._pipeline_logits(emissions, words, word_tags, word_logits)}

    def _pipeline_logits(
        self, emissions: torch.Tensor, words: Words, word_tags: torch.Tensor, word_logits: torch.Tensor
    ) -> torch.Tensor:
        """Token logits from which the stock pipeline reproduces the word decisions, with every aggregation
        strategy ("simple", and the word-level "first", "max", "average" where its words are ours: WordPiece).

        Word starts: the word's logits. Continuation subwords: the word's logits with its ``I-`` tag raised just
        above the word's tag (so the argmax continues the entity, while the word's tag keeps the highest peak
        and the highest average over the word's subwords). Tokens between words that are not special (a bare
        ``▁``): ``I-X`` when the words on both sides are in one X entity, else O. Special tokens and padding
        keep their emissions.
        """
        batch, seq_len, num_labels = emissions.shape
        if word_tags.shape[1] == 0:
            return emissions
        continuation = torch.tensor(self._continuation_tag, device=emissions.device)
        tag_type = torch.tensor(self._tag_type, device=emissions.device)
        own = words.word_index.clamp(0, word_tags.shape[1] - 1)  # shape: (batch, seq_len)
        own_tags = word_tags.gather(1, own)  # shape: (batch, seq_len)
        own_logits = gather_rows(word_logits, own)  # shape: (batch, seq_len, num_labels)
        logits = torch.where(words.word_start[..., None], own_logits, emissions)
        inner = words.in_word & ~words.word_start
        # the word's tag a close second: argmax I-X ("simple" joins the word), a flatter peak than the first
        # subword's ("max" keeps the first subword's tag), and on average the word's tag ("average")
        continued = force_argmax(own_logits, continuation[own_tags])
        logits = torch.where(inner[..., None], continued, logits)
        if self._outside_tag is not None:
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
            gap_tags = torch.where(spans, next_tags, torch.full_like(next_tags, self._outside_tag))
            logits = torch.where(words.gap[..., None], force_argmax(emissions, gap_tags), logits)
        return logits


class TokenClassificationModelCRF(TokenClassificationModel):
    """TokenClassificationModel with a CRF over word positions: trained by CRF NLL, decoded by Viterbi.

    In eval mode ``logits`` at word starts are the CRF marginals (log) with the Viterbi tag raised to the argmax,
    so the stock pipeline returns the Viterbi decode.
    """

    def __init__(self, config: CardioNERConfig) -> None:
        config.use_crf = True
        super().__init__(config)

    def _build_decoder(self, config: CardioNERConfig, labels: list[str]) -> None:
        start, transitions, end = transition_constraints(labels) if config.crf_constraints else (None, None, None)
        num_channels = None if config.channel_types is None else len(config.channel_types)
        self.crf = CRF(len(labels), start, transitions, end, num_channels=num_channels)

    def _loss(self, emissions: torch.Tensor, labels: torch.Tensor, words: Words) -> torch.Tensor:
        labelled = words.word_start & (labels != -100).view(*labels.shape[:2], -1).all(-1)  # channels together
        positions, mask = gather_positions(labelled)
        word_emissions = gather_rows(emissions, positions)  # shape: (batch, words, num_labels)
        word_labels = gather_rows(labels, positions)  # shape: (batch, words[, channels])
        return self.crf.nll(word_emissions, word_labels, mask, reduction=self.config.crf_reduction)

    def _decode_words(self, emissions: torch.Tensor, words: Words) -> tuple[torch.Tensor, torch.Tensor]:
        word_emissions = gather_rows(emissions, words.positions)  # shape: (batch, max_words, num_labels)
        word_tags = self.crf.viterbi_tags(word_emissions, words.word_mask)  # shape: (batch, max_words)
        marginals = self.crf.marginals(word_emissions.detach(), words.word_mask)
        floor = max(1e-12, torch.finfo(marginals.dtype).tiny)  # fp16 flushes 1e-12 to 0, whose log is -inf
        word_logits = force_argmax(marginals.clamp(min=floor).log(), word_tags)
        return word_tags, word_logits


class MultiLabelTokenClassificationModel(TokenClassificationModel):
    """Overlapping entity types: one O/B/I (BIOES: O/B/I/E/S) channel per type, independent sigmoids, BCE loss.

    The head emits one logit per channel and entity tag (B, I[, E, S]); ``p(tag) = sigmoid(logit)``, trained with
    binary cross-entropy against the one-hot gold tag of each channel (O: all zeros), each word-channel weighted
    by ``class_weights[channel][gold tag]`` when given. ``emissions`` have shape (batch, seq_len, channels, tags)
    with the O column set to ``logit(threshold)`` of the channel's type, so that the decision rule is an argmax:

        a word is O in channel T unless its most probable entity tag reaches T's threshold; then it is that tag.

    (With BIO: B if p(B) >= t and p(B) >= p(I), I if p(I) >= t and p(I) > p(B), else O; an I after O is read
    as the start of an entity when spans are made.) With ``constrained_decoding`` (the default) each channel's
    words are instead decoded jointly: the BIO-valid path with the highest sum of these scores (O scoring
    logit(t)), which mends fragments such as ``B I O I``. Types never compete, so entities of different types
    overlap.

    Eval-mode outputs: ``channel_logits`` (batch, seq_len, channels, tags), whose argmax at each word start is the
    word's tag in every channel, and ``logits`` (batch, seq_len, num_labels) over the typed tags of id2label for
    the stock pipeline, which returns one label per token: the channel whose tag beats its O score by the widest
    margin (``flat_channel_scores``). ``decode`` gives every channel's tag per word, ``decode_spans`` the
    (overlapping) entities with character offsets.
    """

    learns_outside_score = False  # the O column is the threshold, not a learned score (the CRF variant learns it)

    def _num_outputs(self, config: CardioNERConfig) -> int:
        if config.channel_types is None:
            raise ValueError("a multi-label model needs config.channel_types (the entity type of each channel)")
        tags_per_channel = len(chain_tags(config)) - (0 if self.learns_outside_score else 1)
        return len(config.channel_types) * tags_per_channel

    def _prior_scores(self, priors: torch.Tensor) -> torch.Tensor:
        """Scores (C, tags) at the priors (C, tags): log p per channel (CRF), or each entity tag's log-odds."""
        return priors.log() if self.learns_outside_score else torch.logit(priors[:, 1:])

    def _emissions(self, *args, **kwargs) -> torch.Tensor:
        """The head's scores as (batch, seq_len, C, tags); arguments as ``TokenClassificationModel._emissions``."""
        scores = super()._emissions(*args, **kwargs)  # shape: (batch, seq_len, C * tags)
        num_channels = len(self.config.channel_types)
        scores = scores.view(*scores.shape[:2], num_channels, -1)  # shape: (batch, seq_len, C, tags)
        if self.learns_outside_score:
            return scores
        thresholds = torch.tensor(self.config.thresholds or [0.5] * num_channels, dtype=scores.dtype,
                                  device=scores.device)
        outside = torch.logit(thresholds).expand(*scores.shape[:2], num_channels)[..., None]  # shape: (b, s, C, 1)
        return torch.cat([outside, scores], dim=-1)  # shape: (batch, seq_len, C, 1 + tags)

    def _loss(self, emissions: torch.Tensor, labels: torch.Tensor, words: Words) -> torch.Tensor:
        labelled = labels != -100  # shape: (batch, seq_len, C)
        if not self.config.label_all_subwords:
            labelled = labelled & words.word_start[..., None]
        gold = labels.clamp(min=0)  # shape: (batch, seq_len, C)
        targets = nn.functional.one_hot(gold, emissions.shape[-1])[..., 1:].to(emissions.dtype)  # (b, s, C, tags - 1)
        losses = nn.functional.binary_cross_entropy_with_logits(emissions[..., 1:], targets, reduction="none")
        weights = labelled.to(emissions.dtype)  # shape: (batch, seq_len, C)
        if self.config.class_weights is not None:
            table = torch.tensor(self.config.class_weights, dtype=emissions.dtype, device=emissions.device)  # (C, T)
            weights = weights * table.expand(*gold.shape, table.shape[-1]).gather(-1, gold[..., None]).squeeze(-1)
        return (losses.mean(-1) * weights).sum() / weights.sum().clamp(min=1e-12)

    def _path_scores(self, word_logits: torch.Tensor) -> torch.Tensor:
        """Each tag's logit, O's being logit(threshold): the path maximises the summed margins over the threshold."""
        return word_logits

    def _eval_outputs(self, emissions: torch.Tensor, words: Words) -> dict[str, torch.Tensor]:
        word_tags, word_logits = self._decode_words(emissions, words)  # shapes: (b, W, C), (b, W, C, T)
        if word_tags.shape[1] == 0:
            return {"logits": flat_channel_scores(emissions), "channel_logits": emissions}
        own = words.word_index.clamp(0, word_tags.shape[1] - 1)  # shape: (batch, seq_len)
        channel_logits = torch.where(words.word_start[..., None, None], gather_rows(word_logits, own), emissions)
        flat_word_logits = flat_channel_scores(word_logits)  # shape: (batch, W, num_labels)
        flat_word_tags = flat_word_logits.argmax(-1)  # the channel whose tag beats its O by the widest margin
        logits = self._pipeline_logits(flat_channel_scores(emissions), words, flat_word_tags, flat_word_logits)
        return {"logits": logits, "channel_logits": channel_logits}


class MultiLabelTokenClassificationModelCRF(TokenClassificationModelCRF, MultiLabelTokenClassificationModel):
    """One BIO-constrained CRF per entity type (the CRF's channels, run as one batch), trained with the CRF NLL
    (per word and channel with ``crf_reduction="token_mean"``), decoded by Viterbi in every channel.

    Emissions are learned for all of a channel's tags, O included; ``channel_logits`` at word starts are each
    channel's log marginals with its Viterbi tag raised to the argmax; ``logits`` as in the sigmoid model.
    """

    learns_outside_score = True


def flat_channel_scores(scores: torch.Tensor) -> torch.Tensor:
    """Per-channel scores (..., channels, tags) -> typed-tag scores (..., 1 + channels * (tags - 1)).

    Each entity tag of a channel scores its margin over the channel's O score; the O column is 0. The argmax is
    O when no channel leaves O, else the channel tag with the widest margin.
    """
    margins = scores[..., 1:] - scores[..., :1]  # shape: (..., C, tags - 1)
    flat = margins.flatten(-2)  # shape: (..., C * (tags - 1))
    return torch.cat([torch.zeros_like(flat[..., :1]), flat], dim=-1)


def model_class_for(config: CardioNERConfig) -> type[TokenClassificationModel]:
    """The model class a config describes: multi-class or multi-label (``channel_types``), softmax or CRF."""
    if config.channel_types is not None:
        return MultiLabelTokenClassificationModelCRF if config.use_crf else MultiLabelTokenClassificationModel
    return TokenClassificationModelCRF if config.use_crf else TokenClassificationModel


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


def _continuation_tags(labels: list[str]) -> list[int]:
    index = {label: position for position, label in enumerate(labels)}
    result = []
    for position, label in enumerate(labels):
        prefix, entity_type = split_tag(label)
        inside = f"I-{entity_type}" if entity_type else "I"
        result.append(index[inside] if prefix in ("B", "I", "E", "S") and inside in index else position)
    return result


def _tag_types(labels: list[str]) -> list[int]:
    types: dict[str, int] = {}
    result = []
    for label in labels:
        prefix, entity_type = split_tag(label)
        result.append(-1 if prefix in (None, "O") else types.setdefault(entity_type, len(types)))
    return result
