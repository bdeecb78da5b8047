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

import json

import torch

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
