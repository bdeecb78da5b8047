#!/usr/bin/env python
"""Annotate text with an exported cardioner model, using nothing but torch and transformers.

Copy this file anywhere; it needs no cardioner install. It loads the model folder with
``trust_remote_code=True`` (the folder's own ``modeling.py``), reads a ``.txt`` file, a folder of them
(recursive) or JSONL (``{"id": ..., "text": ...}`` per line), cuts each document into overlapping windows of
subwords, decodes every window with the model (Viterbi for CRF models), takes each word's tag from the window
where it sits farthest from an edge (joining again an entity that a window cut split,
where no window holds the cut word inside), and writes spans with exact character
offsets. Multi-label models (one tag chain per entity type: a CRF per type, or sigmoids
with the thresholds in their config) give each type's spans, overlaps included:

    python viterbi_predict.py --model MODEL_DIR --input notes/ --output predictions/ --format brat
    python viterbi_predict.py --model MODEL_DIR --input docs.jsonl --output predictions.jsonl --format jsonl
    python viterbi_predict.py --model MODEL_DIR --input notes/ --output predictions.tsv --format tsv

Formats: ``brat`` writes ``NAME.txt`` (the text, byte for byte) and ``NAME.ann`` per document into a folder
(with ``--score-notes``, each span's confidence as an AnnotatorNotes line); ``jsonl`` one ``{"id", "text",
"spans": [{"start", "end", "label", "score"}]}`` per line; ``tsv`` the MultiCardioNER table (filename, label,
start_span, end_span, text) with a ``score`` column. The output must be new (brat: or an empty folder): the
script never replaces a file, so a gold ``.ann`` or an earlier output is left alone; it is written beside its
place and renamed into it when whole, so a crash leaves no half-written output. Each span's confidence is the
one ``cardioner predict`` gives (the model's span-confidence pieces, its rule and its fitted
``confidence_temperature``, all read from the export's own modeling.py and config), to the same 4 decimals.

Windows are cut exactly as ``cardioner predict`` cuts them, so both give the same spans: words come from the
model's own word segmentation (its ``token_classes`` buffer and ``word_start_mask``), each window holds whole
words plus the special tokens, consecutive windows share at most ``--stride`` subwords, and a word longer than
a window is cut into window-sized words. Windows are batched in the same order (sorted by length) too.

A model trained with document context (``data.context`` N in its config) reads its windows as it was
trained: each window's own words are one line of the text (a sentence), with up to N subwords of the text
around them on each side, unlabelled (``context_mask``): the rest of the document, then the neighbouring
JSONL records of the same ``"document"``. Context is read, never tagged: spans come from own words only.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForTokenClassification, AutoTokenizer

FORMATS = ("brat", "jsonl", "tsv")
SCORE_DECIMALS = 4  # a span's confidence as written (as cardioner's writers write it)


# --------------------------------------------------------------------------------------------- reading
def read_text(path: Path) -> str:
    """A UTF-8 file exactly as stored (no newline translation), so offsets index the file's characters."""
    return path.read_bytes().decode("utf-8")


def read_documents(path: Path) -> list[tuple[str, str, str | None]]:
    """(id, text, group) of each document of a ``.txt`` file, a folder of ``.txt`` files, or JSONL with
    ``id``, ``text`` and, optionally, ``document`` (the group: consecutive records of one document lend each
    other context); the group of a file is None."""
    if not path.exists():
        raise SystemExit(f"error: --input {path}: no such file or folder")
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        documents = []
        for line_no, line in enumerate(read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SystemExit(f"error: {path}:{line_no}: expected an object with a string 'text'")
            doc_id, group = record.get("id"), record.get("document")
            if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int))
                                      or group == ""):
                raise SystemExit(
                    f"error: {path}:{line_no}: 'document' must be a non-empty string or an integer"
                )
            documents.append((f"{path.stem}#{line_no}" if doc_id is None else str(doc_id), record["text"],
                              None if group is None else str(group)))
        return documents
    if path.is_file():
        return [(path.stem, read_text(path), None)]
    files = sorted(path.rglob("*.txt"))
    if not files:
        raise SystemExit(f"error: --input {path}: no .txt files in the folder")
    return [(f.relative_to(path).as_posix()[: -len(".txt")], read_text(f), None) for f in files]


# --------------------------------------------------------------------------------------------- windows
class Windower:
    """Cut a document into whole-word windows of subwords, as cardioner's Encoder does.

    Args:
        model: the loaded model (its ``token_classes`` buffer and module's ``word_start_mask`` define words).
        tokenizer: the model folder's fast tokenizer.
        max_length: window size in subwords, special tokens included.
        stride: most subwords two consecutive windows share (without context).
        context: subwords of context on each side of a window's own words (0: none; windows then overlap).
    """

    def __init__(self, model, tokenizer, max_length: int, stride: int, context: int = 0):
        self.word_start_mask = sys.modules[type(model).__module__].word_start_mask  # the exported modeling.py
        self.token_classes = model.token_classes.cpu()  # shape: (vocab_size,)
        self.tokenizer = tokenizer
        # a copy without padding and truncation: a tokenizer.json that pads (e.g. to 128) would add pads here
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        probe = backend.encode("a", add_special_tokens=True)
        text = [i for i, special in enumerate(probe.special_tokens_mask) if not special]
        self.prefix_ids, self.suffix_ids = probe.ids[: text[0]], probe.ids[text[-1] + 1 :]
        self.prefix_types, self.text_type, self.suffix_types = (
            probe.type_ids[: text[0]], probe.type_ids[text[0]], probe.type_ids[text[-1] + 1 :])
        self.use_token_type_ids = "token_type_ids" in tokenizer.model_input_names
        self.capacity = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        self.stride = stride
        if not 0 <= stride < self.capacity:
            raise SystemExit(
                f"error: --stride {stride} must be >= 0 and < the {self.capacity} text subwords of a "
                f"window of --max-length {max_length}"
            )
        self.context = context
        if not 0 <= 2 * context < self.capacity:
            raise SystemExit(
                f"error: this model reads {context} subwords of context on each side of a window's own "
                f"words; a window of --max-length {max_length} ({self.capacity} text subwords) leaves no "
                f"room for them"
            )

    def pieces(self, text: str) -> dict:
        """A text's subwords: ids, character offsets, which are in and start words, and its units."""
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        in_word, word_start = self._segment(ids)
        units = self._split_long_units(whole_word_units(in_word, word_start), in_word, word_start)
        return {"text": text, "ids": ids, "offsets": offsets, "in_word": in_word, "word_start": word_start,
                "units": units}

    def __call__(self, pieces: dict, before: list[dict] = (), after: list[dict] = ()) -> dict:
        """Words (character spans, piece ranges) and windows (ids; first/end piece; edges) of one text's
        ``pieces``; with context, ``before`` and ``after`` are the pieces of the other documents of its group,
        nearest first."""
        text, ids, offsets, units = pieces["text"], pieces["ids"], pieces["offsets"], pieces["units"]
        words = word_piece_ranges(pieces["in_word"], pieces["word_start"])
        word_offsets = [trim(text, offsets[first][0], offsets[end - 1][1]) for first, end in words]
        ends = {0, len(units)}  # unit boundaries that are no cut: the text's ends (and, with context, lines)
        if self.context:
            breaks = line_breaks(pieces)
            ranges = pack_lines(units, self.capacity - 2 * self.context, breaks)
            ends.update(breaks)
        else:
            ranges = pack(units, self.capacity, self.stride)
        windows = []
        for u0, u1 in ranges:
            start, end = (units[u0][0], units[u1 - 1][1]) if u1 > u0 else (0, 0)
            left_context, right_context = [], []
            if self.context:
                budget = min(self.context, (self.capacity - (end - start)) // 2)  # a long word takes some
                left_context = context_ids([(ids, units[:u0])] + [(p["ids"], p["units"]) for p in before],
                                           budget, -1)
                right_context = context_ids([(ids, units[u1:])] + [(p["ids"], p["units"]) for p in after],
                                            budget, 1)
            text_ids = left_context + ids[start:end] + right_context
            window = {
                "input_ids": self.prefix_ids + text_ids + self.suffix_ids,
                "start": start,
                "end": end,
                "left": -math.inf if u0 in ends else start,
                "right": math.inf if u1 in ends else end,
            }
            if self.use_token_type_ids:
                window["token_type_ids"] = (
                    self.prefix_types + [self.text_type] * len(text_ids) + self.suffix_types
                )
            if self.context:  # 1 at the context pieces: read by the backbone, in no word
                window["context_mask"] = ([0] * len(self.prefix_ids) + [1] * len(left_context)
                                          + [0] * (end - start) + [1] * len(right_context)
                                          + [0] * len(self.suffix_ids))
            windows.append(window)
        return {"word_pieces": words, "word_offsets": word_offsets, "windows": windows}

    def _segment(self, ids: list[int]) -> tuple[list[bool], list[bool]]:
        if not ids:
            return [], []
        ids_tensor = torch.tensor(ids, dtype=torch.long)
        in_table = ids_tensor < len(self.token_classes)
        classes = self.token_classes[ids_tensor.clamp(0, len(self.token_classes) - 1)]
        classes = torch.where(in_table, classes, torch.full_like(classes, 3))  # 3: TOKEN_SPECIAL
        in_word, word_start = self.word_start_mask(classes[None])  # shape: (1, num_pieces) each
        return in_word[0].tolist(), word_start[0].tolist()

    def _split_long_units(
        self, units: list[tuple[int, int]], in_word: list[bool], word_start: list[bool]
    ) -> list:
        """Cut units longer than a window into window-sized ones; a cut inside a word starts a new word."""
        result = []
        for start, end in units:
            cuts = list(range(start, end, self.capacity)) if end - start > self.capacity else [start]
            for cut in cuts:
                if in_word[cut]:
                    word_start[cut] = True
            result.extend((cut, min(cut + self.capacity, end)) for cut in cuts)
        return result


def whole_word_units(in_word: list[bool], word_start: list[bool]) -> list[tuple[int, int]]:
    """[start, end) piece ranges: each word with the non-word pieces just before it (leading ones go to the
    first unit, trailing ones to the last)."""
    if not in_word:
        return []
    starts, run_start = [], None
    for i, (inside, starts_word) in enumerate(zip(in_word, word_start, strict=True)):
        if not inside:
            run_start = i if run_start is None else run_start
            continue
        if starts_word:
            starts.append(i if run_start is None else run_start)
        run_start = None
    if not starts:
        return [(0, len(in_word))]
    starts[0] = 0
    return list(zip(starts, starts[1:] + [len(in_word)], strict=True))


def word_piece_ranges(in_word: list[bool], word_start: list[bool]) -> list[tuple[int, int]]:
    """[first, end) piece range of each word."""
    words, first = [], None
    for i, (inside, starts_word) in enumerate(zip(in_word, word_start, strict=True)):
        if first is not None and (not inside or starts_word):
            words.append((first, i))
            first = None
        if inside and starts_word:
            first = i
    if first is not None:
        words.append((first, len(in_word)))
    return words


def pack(units: list[tuple[int, int]], capacity: int, stride: int) -> list[tuple[int, int]]:
    """[u0, u1) unit ranges of the windows: greedy, each <=
    capacity pieces, overlapping by <= stride pieces."""
    if not units:
        return [(0, 0)]
    sizes = [end - start for start, end in units]
    windows, u0 = [], 0
    while True:
        u1, size = u0, 0
        while u1 < len(units) and size + sizes[u1] <= capacity:
            size += sizes[u1]
            u1 += 1
        windows.append((u0, u1))
        if u1 == len(units):
            return windows
        # step back over whole units that fit in the stride and leave room for unit u1
        next_u0, overlap = u1, 0
        while next_u0 - 1 > u0 and overlap + sizes[next_u0 - 1] <= stride and \
                overlap + sizes[next_u0 - 1] + sizes[u1] <= capacity:
            next_u0 -= 1
            overlap += sizes[next_u0]
        u0 = next_u0


def pack_lines(units: list[tuple[int, int]], capacity: int, breaks: list[int]) -> list[tuple[int, int]]:
    """[u0, u1) unit ranges of the windows' own words with context: one line each (``breaks``: the units
    that follow a line break), a line longer than ``capacity`` pieces cut into as many units as fit."""
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
            u1 = max(u1, u0 + 1)  # a unit longer than the own part: alone, with less context
            ranges.append((u0, u1))
            u0 = u1
    return ranges


def line_breaks(pieces: dict) -> list[int]:
    """Sorted indices of the units whose word comes after a line break (from the previous unit's last word
    piece to this unit's first)."""
    breaks, previous_end = [], None
    for u, (start, end) in enumerate(pieces["units"]):
        inside = [p for p in range(start, end) if pieces["in_word"][p]]
        if not inside:
            continue
        first = pieces["offsets"][inside[0]][0]
        if previous_end is not None and "\n" in pieces["text"][previous_end:first]:
            breaks.append(u)
        previous_end = pieces["offsets"][inside[-1]][1]
    return breaks


def context_ids(sources: list[tuple[list[int], list[tuple[int, int]]]], budget: int, direction: int) -> list:
    """Up to ``budget`` ids of whole units, nearest first: ``sources`` are (ids, units) from the nearest on,
    read backwards (``direction`` -1, the context before a window) or forwards (1, after it)."""
    taken, size = [], 0
    for ids, units in sources:
        for start, end in (reversed(units) if direction < 0 else units):
            if size + end - start > budget:
                return [i for unit in (reversed(taken) if direction < 0 else taken) for i in unit]
            taken.append(ids[start:end])
            size += end - start
    return [i for unit in (reversed(taken) if direction < 0 else taken) for i in unit]


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) without surrounding whitespace (byte-level and Metaspace pieces may include a space)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# --------------------------------------------------------------------------------------------- decoding
@torch.no_grad()
def decode_windows(model, windows: list[dict], pad_token_id: int, batch_size: int) -> None:
    """Store each window's tag id per word (``window["tags"]``) and, where the model gives them, its words'
    span-confidence pieces (``window["confidences"]``: SPAN_OPEN, SPAN_CONTINUE, SPAN_CLOSE log-probabilities
    per word [and channel]), batching windows sorted by length.

    One forward pass in eval mode: a word's tag is the argmax of the eval logits at its first subword (the
    model makes them so: Viterbi for a CRF), its pieces are ``word_confidences`` there. Exports from before
    confidences have no ``word_confidences``; their tags come from ``model.decode`` and carry no score."""
    device = next(model.parameters()).device
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]["input_ids"]))
    for begin in range(0, len(order), batch_size):
        chunk = [windows[i] for i in order[begin : begin + batch_size]]
        length = max(len(w["input_ids"]) for w in chunk)
        inputs = {
            "input_ids": torch.tensor(
                [w["input_ids"] + [pad_token_id] * (length - len(w["input_ids"])) for w in chunk]
            ),
            "attention_mask": torch.tensor(
                [[1] * len(w["input_ids"]) + [0] * (length - len(w["input_ids"])) for w in chunk]
            ),
        }  # shape: (batch, length) each
        for key in ("token_type_ids", "context_mask"):
            if key in chunk[0]:
                inputs[key] = torch.tensor([w[key] + [0] * (length - len(w[key])) for w in chunk])
        inputs = {key: value.to(device) for key, value in inputs.items()}
        with torch.no_grad():
            output = model(**inputs)
        if getattr(output, "word_confidences", None) is None:  # an export from before span confidences
            for window, window_tags in zip(chunk, model.decode(**inputs), strict=True):
                window["tags"], window["confidences"] = window_tags, None
            continue
        words = model.words(inputs["input_ids"], inputs["attention_mask"], inputs.get("context_mask"))
        logits = output.logits if output.channel_logits is None else output.channel_logits  # (b, s[, C], T)
        for b, window in enumerate(chunk):
            starts = words.positions[b, : int(words.word_mask[b].sum())]  # each word's first subword
            window["tags"] = logits[b, starts].argmax(-1).tolist()  # shape: (words[, channels])
            window["confidences"] = output.word_confidences[b, starts].float().tolist()  # (words[, C], 3)


def merge_windows(document: dict) -> tuple[list, list, set[int], set[int]]:
    """One tag id per word, from the window where the word sits farthest from an edge (ties: earlier window).

    Distances are in subwords from the window's first word and to its last word (the words at a cut, whatever
    non-word pieces open the window); a window edge at the document's start or end is no edge (no context is
    cut there). Returns the tag ids, the span-confidence pieces from the same windows (None without them), and
    the words taken at a cut: those taken from a window whose first word they are (and that does not start the
    document), and those taken from a window whose last word they are (and that does not end it) — see
    ``rejoin_cut_entities``.
    """
    pieces = document["word_pieces"]
    firsts = [first for first, _ in pieces]
    best, merged, merged_pieces = [-math.inf] * len(pieces), [None] * len(pieces), [None] * len(pieces)
    scored = all(window.get("confidences") is not None for window in document["windows"])
    start_cut, end_cut = [False] * len(pieces), [False] * len(pieces)
    for window in document["windows"]:
        words = range(bisect.bisect_left(firsts, window["start"]), bisect.bisect_left(firsts, window["end"]))
        if len(words) != len(window["tags"]):
            raise RuntimeError(
                f"the model found {len(window['tags'])} words in a window of {len(words)} words"
            )
        if not words:
            continue
        left = -math.inf if window["left"] == -math.inf else pieces[words[0]][0]
        right = math.inf if window["right"] == math.inf else pieces[words[-1]][1]
        for i, (w, tag) in enumerate(zip(words, window["tags"], strict=True)):
            distance = min(pieces[w][0] - left, right - pieces[w][1])
            if distance > best[w]:
                best[w], merged[w] = distance, tag
                merged_pieces[w] = window["confidences"][i] if scored else None
                start_cut[w] = w == words[0] and left != -math.inf
                end_cut[w] = w == words[-1] and right != math.inf
    return (
        merged,
        merged_pieces if scored else None,
        {w for w, cut in enumerate(start_cut) if cut},
        {w for w, cut in enumerate(end_cut) if cut},
    )


def rejoin_cut_entities(tags: list[str], start_cuts: set[int], end_cuts: set[int]) -> list[str]:
    """Undo the re-tagging that training gives an entity cut by a window edge, at the words taken at a cut.

    A window's first word was trained as the start of an entity (I-X -> B-X, E-X -> S-X), and
    under BIOES its last word as the end of one (I-X -> E-X, B-X -> S-X). Where no window holds
    such a word inside (stride 0, windows sharing one word), two consecutive words of the same
    type are one entity when each side either continues it (B-/I- on the left, I-/E- on the
    right) or is a word at that cut: the right word then continues the left one (B -> I, S ->
    E) and the left one runs into the right one (E -> I, S -> B). As cardioner's Encoder does.
    """
    tags = list(tags)
    joins = set()
    for p in sorted({w - 1 for w in start_cuts if w > 0} | {w for w in end_cuts if w + 1 < len(tags)}):
        (left_prefix, _, left_type), (right_prefix, _, right_type) = tags[p].partition("-"), tags[
            p + 1
        ].partition("-")
        if "O" in (left_prefix, right_prefix) or left_type != right_type:
            continue
        left_open, right_open = left_prefix in ("B", "I"), right_prefix in ("I", "E")
        if (
            not (left_open and right_open)
            and (left_open or p in end_cuts)
            and (right_open or p + 1 in start_cuts)
        ):
            joins.add(p)
    for w in sorted({w for p in joins for w in (p, p + 1)}):
        prefix, _, label = tags[w].partition("-")
        if w - 1 in joins:
            prefix = {"B": "I", "S": "E"}.get(prefix, prefix)
        if w in joins:
            prefix = {"E": "I", "S": "B"}.get(prefix, prefix)
        tags[w] = f"{prefix}-{label}"
    return tags


def tags_to_spans(word_offsets: list[tuple[int, int]], tags: list[str],
                  score=None) -> list[tuple[int, int, str, float | None]]:
    """(start, end, label, score) of each entity in word tags, read leniently (BIO and BIOES alike).

    ``B-T`` starts an entity; ``I-T``/``E-T`` continue one of type T (else start one); ``E-T`` and ``S-T`` end
    it; ``O`` ends it. Words with an empty character span never start or end a span. ``score(first, last)``
    gives the confidence of the entity over words first..last (None: no scores).
    """
    entities, current = [], None
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix in ("I", "E") and current and current[2] == label:
            current[1] = i
        else:
            if current:
                entities.append(current)
            current = [i, i, label] if prefix != "O" else None
        if prefix in ("E", "S") and current:
            entities.append(current)
            current = None
    if current:
        entities.append(current)
    spans = []
    for first, last, label in entities:
        confidence = None if score is None else score(first, last)
        while first <= last and word_offsets[first][0] >= word_offsets[first][1]:
            first += 1
        while last >= first and word_offsets[last][0] >= word_offsets[last][1]:
            last -= 1
        if first <= last:
            spans.append((word_offsets[first][0], word_offsets[last][1], label, confidence))
    return sorted(spans, key=lambda span: span[:3])


def channel_labels(config) -> list[list[str]]:
    """The typed tag of each tag id, per channel. A flat model has one channel (its id2label); a multi-label
    model one per entity type (``config.channel_types``), whose ids O, B, I[, E, S] map onto that type's tags
    in id2label (``O, B-T1, I-T1, B-T2, ...``, channels in order)."""
    id2label = {int(k): v for k, v in config.id2label.items()}
    types = getattr(config, "channel_types", None)
    if not types:
        return [[id2label[i] for i in range(len(id2label))]]
    per_channel = (len(id2label) - 1) // len(types)
    return [
        ["O"] + [id2label[1 + c * per_channel + k] for k in range(per_channel)] for c in range(len(types))
    ]


def predict(model, tokenizer, documents: list[tuple[str, str, str | None]], max_length: int, stride: int,
            batch_size: int, context: int = 0) -> list[dict]:
    """{"id", "text", "spans": [(start, end, label)]} for each (id, text, group) document.

    Multi-label models decode one tag per word and type; each type's spans are read on their own, so entities
    of different types may overlap. With ``context``, a document reads its group's neighbours (consecutive
    documents of the same group) around its own text."""
    windower = Windower(model, tokenizer, max_length, stride, context)
    pieces = [windower.pieces(text) for _, text, _ in documents]
    groups = [group for _, _, group in documents]
    encoded = []
    for i, group in enumerate(groups):
        before, after = [], []  # the group's other documents, nearest first
        if context and group is not None:
            j = i
            while j > 0 and groups[j - 1] == group:
                j -= 1
                before.append(pieces[j])
            j = i
            while j + 1 < len(groups) and groups[j + 1] == group:
                j += 1
                after.append(pieces[j])
        encoded.append(windower(pieces[i], before, after))
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    decode_windows(model, [w for doc in encoded for w in doc["windows"]], pad_token_id, batch_size)
    channels = channel_labels(model.config)
    results = []
    for (doc_id, text, _), doc in zip(documents, encoded, strict=True):
        merged, merged_pieces, start_cuts, end_cuts = merge_windows(doc)
        words = [tag if isinstance(tag, list) else [tag] for tag in merged]  # tag ids per channel
        spans = []
        for c, labels in enumerate(channels):
            tags = rejoin_cut_entities([labels[int(tags[c])] for tags in words], start_cuts, end_cuts)
            score = None
            if merged_pieces is not None:  # each word's (3,) pieces in this channel
                rows = [piece if not isinstance(piece[0], list) else piece[c] for piece in merged_pieces]
                score = functools.partial(span_score, model, rows)
            spans.extend(tags_to_spans(doc["word_offsets"], tags, score))
        results.append({"id": doc_id, "text": text, "spans": sorted(spans, key=lambda span: span[:3])})
    return results


def span_score(model, rows: list, first: int, last: int) -> float:
    """The confidence of the entity over words first..last from their span-confidence pieces, by the exported
    modeling.py's own ``span_confidence`` and the model's rule (``span_score``: a CRF's product of posteriors,
    the geometric mean for models that score words independently), as ``cardioner predict`` computes it."""
    modeling = sys.modules[type(model).__module__]  # the export's own modeling.py
    rule = getattr(model, "span_score", None)
    if rule is None:  # an export from before the rules: the product
        return modeling.span_confidence(rows, first, last)
    return modeling.span_confidence(rows, first, last, rule)


# --------------------------------------------------------------------------------------------- writing
def check_output(output: Path, input: Path, format: str) -> None:
    """Exit with a message unless ``output`` may be written: not the input, not inside or around it, and new
    (brat: or an empty folder). The script replaces nothing: an existing file may be gold data."""
    target, source = Path(os.path.realpath(output)), Path(os.path.realpath(input))
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise SystemExit(f"error: --output {output}: it is, holds or lies inside the input {input}; "
                         "choose an output outside it")
    if os.path.lexists(output):
        is_link = output.is_symlink()
        if format != "brat" or is_link or not output.is_dir() or any(output.iterdir()):
            raise SystemExit(f"error: --output {output}: exists; this script never replaces files "
                             "(choose a new output, or move the old one away)")


def write_predictions(results: list[dict], output: Path, format: str, score_notes: bool = False) -> None:
    """Write brat (a folder of NAME.txt + NAME.ann), JSONL or MultiCardioNER TSV, each span's confidence as
    ``cardioner predict`` writes it: JSONL ``"score"``, a TSV ``score`` column after ``text``, brat
    AnnotatorNotes lines with ``score_notes`` (4 decimals). Written into a hidden folder beside ``output``
    and renamed into place when whole: a crash leaves no half-written output."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        if format == "brat":
            write_staged(results, staged, format, score_notes)
            if output.is_dir():
                output.rmdir()  # empty (check_output); one that filled since is not removed: rmdir fails
            os.rename(staged, output)
            return
        write_staged(results, staged / "output", format, score_notes)
        try:
            os.link(staged / "output", output)  # unlike a rename, fails where a file appeared since the check
        except FileExistsError:
            raise SystemExit(f"error: --output {output}: appeared while writing; left as it is") from None
        except OSError:  # a file system without hard links
            os.replace(staged / "output", output)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def one_line(text: str, start: int, end: int) -> str:
    """A span's text for brat's text field (a span may cross a line break)."""
    return text[start:end].replace("\r", " ").replace("\n", " ")


def tsv_field(text: str, start: int, end: int) -> str:
    """A span's text for a TSV cell."""
    covered = text[start:end]
    return " ".join(covered.split()) if "\t" in covered or "\n" in covered else covered


def write_staged(results: list[dict], output: Path, format: str, score_notes: bool) -> None:
    """What ``write_predictions`` writes, at ``output`` (a new folder for brat, else a new file)."""
    if format == "brat":
        for result in results:
            base = output / result["id"]
            base.parent.mkdir(parents=True, exist_ok=True)
            with open(base.with_name(base.name + ".txt"), "w", encoding="utf-8", newline="") as f:
                f.write(result["text"])
            with open(base.with_name(base.name + ".ann"), "w", encoding="utf-8", newline="") as f:
                note = 0
                for i, (start, end, label, score) in enumerate(result["spans"], 1):
                    f.write(f"T{i}\t{label} {start} {end}\t{one_line(result['text'], start, end)}\n")
                    if score_notes and score is not None:
                        note += 1
                        f.write(f"#{note}\tAnnotatorNotes T{i}\tconfidence {score:.{SCORE_DECIMALS}f}\n")
        return
    scored = any(span[3] is not None for result in results for span in result["spans"])
    with open(output, "w", encoding="utf-8", newline="") as f:
        if format == "jsonl":
            for result in results:
                spans = []
                for start, end, label, score in result["spans"]:
                    spans.append({"start": start, "end": end, "label": label})
                    if score is not None:
                        spans[-1]["score"] = round(score, SCORE_DECIMALS)
                record = {"id": result["id"], "text": result["text"], "spans": spans}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            f.write("filename\tlabel\tstart_span\tend_span\ttext" + ("\tscore" if scored else "") + "\n")
            for result in results:
                for start, end, label, score in result["spans"]:
                    cells = [result["id"], label, str(start), str(end), tsv_field(result["text"], start, end)]
                    if scored:
                        cells.append("" if score is None else f"{score:.{SCORE_DECIMALS}f}")
                    f.write("\t".join(cells) + "\n")


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="exported model folder")
    parser.add_argument(
        "--input", required=True, type=Path, help="a .txt file, a folder of .txt files, or JSONL"
    )
    parser.add_argument(
        "--output", required=True, type=Path, help="output folder (brat) or file (jsonl, tsv)"
    )
    parser.add_argument("--format", choices=FORMATS, default="brat")
    parser.add_argument("--max-length", type=int, help="window size in subwords (default: as trained)")
    parser.add_argument("--stride", type=int, help="window overlap in subwords (default: as trained)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per batch")
    parser.add_argument("--score-notes", action="store_true",
                        help="brat: write each span's confidence as an AnnotatorNotes line")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    if not (args.model / "config.json").is_file():
        raise SystemExit(f"error: --model {args.model}: not a model folder (no config.json)")
    check_output(args.output, args.input, args.format)  # before the model loads
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)  # no prompt over auto_map
    model = (
        AutoModelForTokenClassification.from_pretrained(args.model, trust_remote_code=True)
        .to(args.device)
        .eval()
    )
    if not hasattr(model, "decode") or not hasattr(model, "token_classes"):
        raise SystemExit(f"error: --model {args.model}: not a cardioner model (no decode() / token_classes)")
    windows = getattr(model.config, "cardioner_windows", None) or {}
    max_length = (
        args.max_length or windows.get("max_length") or min(int(tokenizer.model_max_length or 512), 512)
    )
    # as cardioner
    stride = next((s for s in (args.stride, windows.get("stride")) if s is not None), max_length // 4)
    stride = min(stride, max_length // 2)  # as cardioner predict does
    context = int(windows.get("context", 0))  # data.context: as trained

    documents = read_documents(args.input)
    results = predict(model, tokenizer, documents, max_length, stride, args.batch_size, context)
    write_predictions(results, args.output, args.format, args.score_notes)
    total = sum(len(r["spans"]) for r in results)
    print(f"{total} entities in {len(results)} documents written to {args.output} ({args.format})")


if __name__ == "__main__":
    main()
