"""Tag schemes, channels, spans <-> word tags, IOB1/BIOES conversion and repair."""

from __future__ import annotations

import itertools
import random

import pytest

from cardioner.data.document import Document, Span
from cardioner.data.encoding import word_tags_to_spans
from cardioner.labels import (
    CONFLICT,
    DISCONTINUOUS,
    DUPLICATE,
    EDGE_INSIDE_WORD,
    EDGE_OFF_WORDS,
    NO_WORD,
    Channel,
    LabelSet,
    align_spans,
    bio_to_bioes,
    bioes_to_bio,
    check_scheme,
    detect_scheme,
    entities_to_tags,
    id2label,
    iob1_to_iob2,
    label2id,
    repair_tags,
    spans_to_word_tags,
    split_tag,
    tags_to_entities,
)

TEXT = "Acute renal failure in the left kidney."
#       0     6     12      20 23  27   32    38
WORDS = [(0, 5), (6, 11), (12, 19), (20, 22), (23, 26), (27, 31), (32, 38), (38, 39)]


def test_flat_channel_tags_are_sorted_types_with_o_first():
    labels = LabelSet.flat(["DISO", "ANAT", "DISO"])
    assert labels.channels[0].tags == ("O", "B-ANAT", "I-ANAT", "B-DISO", "I-DISO")
    assert labels.id2label == {0: "O", 1: "B-ANAT", 2: "I-ANAT", 3: "B-DISO", 4: "I-DISO"}
    assert labels.label2id["I-DISO"] == 4
    assert not labels.is_multilabel and labels.num_channels == 1
    bioes = LabelSet.flat(["A"], scheme="BIOES")
    assert bioes.channels[0].tags == ("O", "B-A", "I-A", "E-A", "S-A")


def test_multilabel_has_one_untyped_channel_per_type():
    labels = LabelSet.multilabel(["PROC", "ANAT", "CHEM"], scheme="bioes")
    assert labels.is_multilabel and labels.num_channels == 3
    assert [c.types for c in labels.channels] == [("ANAT",), ("CHEM",), ("PROC",)]
    assert all(c.tags == ("O", "B", "I", "E", "S") for c in labels.channels)
    assert labels.channel_of("PROC") == 2
    channel = labels.channels[1]
    assert channel.tag_id("E-CHEM") == 3 and channel.typed_tag(3) == "E-CHEM" and channel.typed_tag(0) == "O"
    with pytest.raises(ValueError, match="'ANAT' is not in this channel"):
        channel.tag_id("B-ANAT")


def test_label_set_config_round_trip_and_from_documents():
    docs = [Document("a", "x y", [Span(0, 1, "B_T"), Span(2, 3, "A_T")])]
    for multilabel in (False, True):
        labels = LabelSet.from_documents(docs, multilabel=multilabel, scheme="BIOES")
        assert labels.types == ("A_T", "B_T")
        assert LabelSet.from_config(labels.to_config()) == labels


def test_helpers_and_bad_values():
    assert id2label(["O", "B"]) == {0: "O", 1: "B"} and label2id(["O", "B"]) == {"O": 0, "B": 1}
    assert check_scheme("iob2") == "BIO"
    assert split_tag("B-ID-SUJETO") == ("B", "ID-SUJETO") and split_tag("I") == ("I", None)
    with pytest.raises(ValueError, match="'BILOU'"):
        check_scheme("BILOU")
    with pytest.raises(ValueError, match="'X-DISO'"):
        split_tag("X-DISO")
    with pytest.raises(ValueError, match="exactly one entity type"):
        Channel(("A", "B"), typed=False)
    with pytest.raises(ValueError, match="more than one channel"):
        LabelSet((Channel(("A",)), Channel(("A", "B"))))
    with pytest.raises(ValueError, match="invalid entity type 'O'"):
        LabelSet.flat(["O"])


def test_spans_to_word_tags_round_trip_and_inexact_spans():
    spans = [Span(0, 19, "DISO"), Span(27, 38, "ANAT")]
    tags, inexact = spans_to_word_tags(WORDS, spans)
    assert tags == ["B-DISO", "I-DISO", "I-DISO", "O", "O", "B-ANAT", "I-ANAT", "O"]
    assert inexact == []
    assert word_tags_to_spans(WORDS, tags) == spans
    tags, _ = spans_to_word_tags(WORDS, spans, "BIOES")
    assert tags == ["B-DISO", "I-DISO", "E-DISO", "O", "O", "B-ANAT", "E-ANAT", "O"]
    assert word_tags_to_spans(WORDS, tags, "BIOES") == spans

    inside = Span(8, 19, "DISO")  # "nal failure": starts inside "renal"
    off = Span(26, 31, "ANAT")  # " left": starts on a space
    nothing = Span(22, 23, "X")  # a space only
    tags, inexact = spans_to_word_tags(WORDS, [inside, off, nothing])
    assert inexact == [inside, nothing, off] or set(inexact) == {inside, off, nothing}
    assert tags[1:3] == ["B-DISO", "I-DISO"] and tags[5] == "B-ANAT"  # snapped to the words they touch
    problems = dict((s, r) for s, r in align_spans(WORDS, [inside, off, nothing]).problems)
    assert problems == {inside: EDGE_INSIDE_WORD, off: EDGE_OFF_WORDS, nothing: NO_WORD}


def test_conflicts_duplicates_and_discontinuous_spans_are_reported():
    outer, inner = Span(0, 19, "DISO"), Span(6, 11, "ANAT")
    gapped = Span(27, 38, "ANAT", fragments=((27, 31), (32, 38)))
    alignment = align_spans(WORDS, [inner, outer, Span(0, 19, "DISO"), gapped])
    assert alignment.entities == [(0, 2, "DISO"), (5, 6, "ANAT")]
    assert sorted(r for _, r in alignment.problems) == sorted([CONFLICT, DUPLICATE, DISCONTINUOUS])


def test_lenient_decoding():
    assert tags_to_entities(["O", "I-A", "I-A", "I-B", "B-B", "O", "I-A"]) == [
        (1, 2, "A"),
        (3, 3, "B"),
        (4, 4, "B"),
        (6, 6, "A"),
    ]
    # BIOES, imperfect: B without E, a lone E, I-E of another type, S inside an entity.
    tags = ["B-A", "O", "E-A", "I-B", "E-A", "B-A", "S-A", "I-A", "E-A"]
    assert tags_to_entities(tags) == [
        (0, 0, "A"),
        (2, 2, "A"),
        (3, 3, "B"),
        (4, 4, "A"),
        (5, 5, "A"),
        (6, 6, "A"),
        (7, 8, "A"),
    ]
    assert tags_to_entities(["B", "I", "O", "I"]) == [(0, 1, None), (3, 3, None)]  # untyped channel tags
    with pytest.raises(ValueError, match="untyped tag"):
        word_tags_to_spans(WORDS[:2], ["B", "I"])
    with pytest.raises(ValueError, match="3 tags for 2 words"):
        word_tags_to_spans(WORDS[:2], ["O", "O", "O"])


def test_every_entity_set_round_trips_in_both_schemes():
    """Brute force: every way of placing non-overlapping entities of 2 types over 5 words."""
    n = 5
    ranges = [(a, b) for a in range(n) for b in range(a, n)]
    count = 0
    for k in range(4):
        for chosen in itertools.combinations(ranges, k):
            if any(x[1] >= y[0] for x, y in itertools.pairwise(chosen)):
                continue
            for types in itertools.product("AB", repeat=k):
                entities = [(a, b, t) for (a, b), t in zip(chosen, types, strict=True)]
                for scheme in ("BIO", "BIOES"):
                    tags = entities_to_tags(n, entities, scheme)
                    assert tags_to_entities(tags) == entities
                    assert repair_tags(tags, scheme) == (tags, 0)
                bio = entities_to_tags(n, entities, "BIO")
                assert bio_to_bioes(bio) == entities_to_tags(n, entities, "BIOES")
                assert bioes_to_bio(bio_to_bioes(bio)) == bio
                count += 1
    assert count > 100


def test_iob1_to_iob2_and_repair():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "O"]
    assert iob1_to_iob2(iob1) == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "O"]
    assert detect_scheme([iob1]) == "IOB1"
    assert detect_scheme([["B-PER", "I-PER", "O"], ["I-LOC"]]) == "IOB2"
    assert detect_scheme(["O", "S-PER"]) == "BIOES"
    assert repair_tags(["O", "I-A", "I-B", "O"]) == (["O", "B-A", "B-B", "O"], 2)
    assert repair_tags(["B-A", "O", "I-A", "E-A"], "BIOES") == (["S-A", "O", "B-A", "E-A"], 2)
    assert repair_tags(["O", "I", "I", "O", "B"]) == (["O", "B", "I", "O", "B"], 1)
    with pytest.raises(ValueError, match="E-/S- tags in a BIO sequence"):
        repair_tags(["S-A"], "BIO")


def test_random_tag_sequences_repair_to_valid_and_stable():
    rng = random.Random(0)
    pool = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B"]
    for _ in range(500):
        tags = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
        repaired, n = repair_tags(tags, "BIOES")
        assert repair_tags(repaired, "BIOES") == (repaired, 0)
        assert n == sum(a != b for a, b in zip(tags, repaired, strict=True))
        assert tags_to_entities(repaired) == tags_to_entities(tags)
        bio = bioes_to_bio(tags)
        assert repair_tags(bio) == (bio, 0) and tags_to_entities(bio) == tags_to_entities(tags)
