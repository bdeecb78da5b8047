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

import inspect
import json
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
        return moved.reshape(-1, *moved.shape[2:])  # shape: (batch * channels, seq_len, ...)

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
        flat_mask = flat_mask.reshape(-1, mask.shape[1])  # shape: (batch * C, seq_len)

        def rows(parameter: torch.Tensor) -> torch.Tensor:
            expanded = parameter[None].expand(batch, *parameter.shape)  # shape: (batch, C, ...)
            return expanded.reshape(-1, *parameter.shape[1:])  # shape: (batch * C, ...)

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


class CardioNERConfig(PretrainedConfig):
    """Configuration of a cardioner token-classification model (backbone config embedded; nothing fetched).

    Args:
        backbone_config: the backbone's own config as a dict, ``model_type`` included.
        head: token head, a key of TOKEN_HEADS ("linear", "mlp").
        classifier_hidden_layers: hidden sizes of the mlp head.
        classifier_activation: activation of the mlp head (a transformers ACT2FN name: "gelu", "relu", ...).
        classifier_dropout: dropout before each head layer.
        use_crf: whether a CRF sits on the emissions (TokenClassificationModelCRF).
        crf_constraints: mask the transitions that the tag scheme (BIO/BIOES, read from id2label) forbids.
        crf_reduction: how the CRF NLL is reduced: "token_mean" (per word), "mean" (per sequence), "sum".
        class_weights: per-label weights of the softmax cross-entropy, or None.
        freeze_backbone: the backbone gets no gradient.
        label_all_subwords: the softmax loss uses every labelled subword (the CRF always uses word starts only).
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
        use_crf: bool = False,
        crf_constraints: bool = True,
        crf_reduction: str = "token_mean",
        class_weights: list[float] | None = None,
        freeze_backbone: bool = False,
        label_all_subwords: bool = False,
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
        self.use_crf = bool(use_crf)
        self.crf_constraints = bool(crf_constraints)
        self.crf_reduction = crf_reduction
        self.class_weights = None if class_weights is None else [float(weight) for weight in class_weights]
        self.freeze_backbone = bool(freeze_backbone)
        self.label_all_subwords = bool(label_all_subwords)
        self.cardioner_version = cardioner_version
        self.config_version = int(config_version)
        super().__init__(**kwargs)
        if self.class_weights is not None and len(self.class_weights) != self.num_labels:
            raise ValueError(f"class_weights has {len(self.class_weights)} values for {self.num_labels} labels")

    def build_backbone_config(self) -> PretrainedConfig:
        """The embedded backbone config as a transformers config object."""
        if self.backbone_config is None:
            raise ValueError("CardioNERConfig.backbone_config is None: build models with from_backbone()")
        return AutoConfig.for_model(**self.backbone_config)


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


# A head is chosen by name: __init__(input_size, num_outputs, config), forward(hidden_states, attention_mask).
TOKEN_HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "mlp": MLPHead}


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class CardioNERTokenClassifierOutput(TokenClassifierOutput):
    """TokenClassifierOutput plus ``emissions``: the raw head output (``logits`` are decoded ones in eval)."""

    emissions: torch.FloatTensor | None = None


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
    return rows.scatter(-1, index, torch.where(needs, top + margin, current))


def swap_columns(rows: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Exchange columns ``first`` and ``second`` of each row. rows (..., T); first, second (...)."""
    index = torch.arange(rows.shape[-1], device=rows.device).expand_as(rows).clone()  # shape: (..., T)
    index.scatter_(-1, first[..., None], second[..., None])
    index.scatter_(-1, second[..., None], first[..., None])
    return rows.gather(-1, index)


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
        hidden_size = self.backbone.config.hidden_size
        self.head = TOKEN_HEADS[config.head](hidden_size, config.num_labels, config)
        vocab_size = max(int(getattr(self.backbone.config, "vocab_size", 0) or 0), 1)
        # TOKEN_* class of each vocabulary id; -1 until set_token_classes() fills it (checked in forward).
        self.register_buffer("token_classes", torch.full((vocab_size,), -1, dtype=torch.int8), persistent=True)
        labels = [config.id2label[index] for index in range(config.num_labels)]
        self._continuation_tag = _continuation_tags(labels)  # tag id -> tag id of its continuation subwords
        self._tag_type = _tag_types(labels)  # tag id -> entity type number; -1 for O and unknown prefixes
        self._outside_tag = config.label2id.get("O") if config.label2id else None
        self._backbone_takes_token_types = "token_type_ids" in inspect.signature(self.backbone.forward).parameters
        self._build_decoder(config, labels)
        if config.freeze_backbone:
            self.backbone.requires_grad_(False)
        self.post_init()

    def _build_decoder(self, config: CardioNERConfig, labels: list[str]) -> None:
        """Add what sits on the emissions (nothing for softmax; the CRF in the subclass)."""

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
        backbone = _load_pretrained_backbone(name_or_path)
        config = CardioNERConfig(
            backbone_config=backbone.config.to_dict(),
            id2label=id2label,
            label2id={label: index for index, label in id2label.items()},
            use_crf=use_crf,
            **head_settings,
        )
        model = (TokenClassificationModelCRF if use_crf else TokenClassificationModel)(config)
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
        logits = emissions
        if not self.training:
            with torch.no_grad():
                word_tags, word_logits = self._decode_words(emissions, words)
                logits = self._pipeline_logits(emissions, words, word_tags, word_logits)
        return CardioNERTokenClassifierOutput(loss=loss, logits=logits, emissions=emissions)

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
        if labels is not None and labels.shape != input_ids.shape:
            raise ValueError(f"labels shape {tuple(labels.shape)} != input_ids shape {tuple(input_ids.shape)}")
        if int(self.token_classes[0]) < 0:
            raise ValueError("token_classes is not set: build the model with from_backbone() or call set_token_classes()")
        return attention_mask

    def backbone_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the head reads from the backbone (the one place the backbone runs; cached when it is frozen).

        Returns:
            (batch, seq_len, hidden): the backbone's last hidden states.
        """
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._backbone_takes_token_types:
            inputs["token_type_ids"] = token_type_ids
        return self.backbone(**inputs)[0]  # shape: (batch, seq_len, hidden)

    def _emissions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if hidden_states is None:
            hidden_states = self.backbone_features(input_ids, attention_mask, token_type_ids)
        return self.head(hidden_states, attention_mask)  # shape: (batch, seq_len, num_labels)

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
        return nn.functional.cross_entropy(
            emissions.reshape(-1, self.num_labels),  # shape: (batch * seq_len, num_labels)
            labels.reshape(-1),  # shape: (batch * seq_len,)
            weight=weight,
            ignore_index=-100,
        )

    def _decode_words(self, emissions: torch.Tensor, words: Words) -> tuple[torch.Tensor, torch.Tensor]:
        """Tag of each word (batch, max_words) and its logits (batch, max_words, num_labels), argmax = tag."""
        word_logits = gather_rows(emissions, words.positions)  # shape: (batch, max_words, num_labels)
        return word_logits.argmax(-1), word_logits

    def _pipeline_logits(
        self, emissions: torch.Tensor, words: Words, word_tags: torch.Tensor, word_logits: torch.Tensor
    ) -> torch.Tensor:
        """Token logits whose argmax reproduces the word decisions under the pipeline's "simple" grouping.

        Word starts: the word's logits. Continuation subwords: the word's logits with the word's tag and its
        ``I-`` tag exchanged. Tokens between words that are not special (a bare ``▁``): ``I-X`` when the words on
        both sides are in one X entity, else O. Special tokens and padding keep their emissions.
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
        continued = force_argmax(swap_columns(own_logits, own_tags, continuation[own_tags]), continuation[own_tags])
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
        self.crf = CRF(config.num_labels, start, transitions, end)

    def _loss(self, emissions: torch.Tensor, labels: torch.Tensor, words: Words) -> torch.Tensor:
        labelled = words.word_start & (labels != -100)
        positions, mask = gather_positions(labelled)
        word_emissions = gather_rows(emissions, positions)  # shape: (batch, words, num_labels)
        word_labels = labels.gather(1, positions)  # shape: (batch, words)
        return self.crf.nll(word_emissions, word_labels, mask, reduction=self.config.crf_reduction)

    def _decode_words(self, emissions: torch.Tensor, words: Words) -> tuple[torch.Tensor, torch.Tensor]:
        word_emissions = gather_rows(emissions, words.positions)  # shape: (batch, max_words, num_labels)
        word_tags = self.crf.viterbi_tags(word_emissions, words.word_mask)  # shape: (batch, max_words)
        marginals = self.crf.marginals(word_emissions.detach(), words.word_mask)
        word_logits = force_argmax(marginals.clamp(min=1e-12).log(), word_tags)
        return word_tags, word_logits


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
