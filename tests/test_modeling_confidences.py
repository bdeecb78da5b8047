"""Span confidences of modeling.py: the CRF's posterior probability of a decoded entity, and the softmax and
sigmoid models' equivalent, checked against brute-force enumeration of every tag sequence."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tiny import tiny_backbone
from transformers import AutoTokenizer

from cardioner.modeling import (
    CRF,
    SPAN_CLOSE,
    SPAN_CONTINUE,
    SPAN_OPEN,
    TokenClassificationModel,
    entity_continuations,
    independent_confidences,
    span_confidence,
    split_tag,
    tags_to_entities,
    transition_constraints,
)

BIO = ["O", "B-A", "I-A", "B-B", "I-B"]
BIOES = ["O", "B-A", "I-A", "E-A", "S-A"]


def entity_probability(probability_of, sequences, path: tuple[int, ...], first: int, last: int,
                       continues) -> float:
    """P(words first..last carry path's tags, the word before does not continue into it, the word after
    does not continue it), summed over every sequence (``probability_of(sequence)``)."""
    total = 0.0
    for sequence in sequences:
        if sequence[first : last + 1] != path[first : last + 1]:
            continue
        if first > 0 and continues[sequence[first - 1]][path[first]]:
            continue
        if last + 1 < len(path) and continues[path[last]][sequence[last + 1]]:
            continue
        total += probability_of(sequence)
    return total


def crf_scorer(crf: CRF, emissions: torch.Tensor):
    """The score of a tag sequence under ``crf`` (constraints applied) for ``emissions`` (seq_len, tags)."""
    mask = torch.ones(1, emissions.shape[0], dtype=torch.bool)
    start, transitions, end = (value[0].tolist() for value in crf._flatten(emissions[None], mask)[2:])
    rows = emissions.tolist()

    def score(sequence: tuple[int, ...]) -> float:
        total = start[sequence[0]] + rows[0][sequence[0]] + end[sequence[-1]]
        for k in range(1, len(sequence)):
            total += transitions[sequence[k - 1]][sequence[k]] + rows[k][sequence[k]]
        return total

    return score


@pytest.mark.parametrize("labels", [BIO, BIOES], ids=["bio", "bioes"])
@pytest.mark.parametrize("constrained", [True, False], ids=["constrained", "unconstrained"])
def test_crf_entity_confidence_is_its_posterior_probability_by_enumeration(labels, constrained):
    torch.manual_seed(3)
    constraints = transition_constraints(labels) if constrained else (None, None, None)
    crf = CRF(len(labels), *constraints)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    crf.requires_grad_(False)
    continues = entity_continuations(labels)
    lengths = [5, 4, 1]
    emissions = torch.randn(len(lengths), 5, len(labels)) * 2
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    generator = torch.Generator().manual_seed(4)
    paths = crf.viterbi_tags(emissions, mask)
    random_paths = torch.randint(0, len(labels), paths.shape, generator=generator)
    checked = 0
    for tags in (paths, random_paths):
        _, confidences = crf.posteriors(emissions, mask, tags, continues)
        assert torch.all(confidences[~mask] == 0)
        for row, length in enumerate(lengths):
            sequences = list(itertools.product(range(len(labels)), repeat=length))
            score = crf_scorer(crf, emissions[row, :length])
            scores = {sequence: score(sequence) for sequence in sequences}
            log_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0).item()

            def probability(sequence, scores=scores, log_z=log_z):
                return math.exp(scores[sequence] - log_z)

            path = tuple(tags[row, :length].tolist())
            rows = confidences[row, :length].tolist()
            # the pieces: the marginal of the first tag, each conditional
            first_marginal = sum(probability(s) for s in sequences if s[0] == path[0])
            assert math.exp(rows[0][SPAN_CONTINUE]) == pytest.approx(first_marginal, abs=1e-5)
            for k in range(1, length):
                both = sum(probability(s) for s in sequences if s[k - 1 : k + 1] == path[k - 1 : k + 1])
                before = sum(probability(s) for s in sequences if s[k - 1] == path[k - 1])
                if before > 1e-6 and both > 1e-6:
                    assert math.exp(rows[k][SPAN_CONTINUE]) == pytest.approx(both / before, abs=1e-4)
            assert rows[length - 1][SPAN_CLOSE] == 0.0
            # every entity of the path, and every stretch of words
            stretches = [(first, last) for first, last, _ in tags_to_entities([labels[t] for t in path])]
            stretches += [(first, last) for first in range(length) for last in range(first, length)]
            for first, last in stretches:
                expected = entity_probability(probability, sequences, path, first, last, continues)
                assert span_confidence(rows, first, last) == pytest.approx(expected, abs=2e-4)
                checked += 1
    assert checked > 20


def test_crf_confidences_with_channels_equal_independent_crfs():
    torch.manual_seed(5)
    tags = ["O", "B", "I"]
    crf = CRF(3, *transition_constraints(tags), num_channels=2)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    emissions = torch.randn(2, 4, 2, 3)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    paths = crf.viterbi_tags(emissions, mask)  # shape: (batch, seq_len, channels)
    marginals, confidences = crf.posteriors(emissions, mask, paths, entity_continuations(tags))
    for channel in range(2):
        single = CRF(3, *transition_constraints(tags))
        with torch.no_grad():
            single.start_transitions.copy_(crf.start_transitions[channel])
            single.end_transitions.copy_(crf.end_transitions[channel])
            single.transitions.copy_(crf.transitions[channel])
        expected_marginals, expected = single.posteriors(emissions[:, :, channel], mask, paths[..., channel],
                                                         entity_continuations(tags))
        torch.testing.assert_close(marginals[:, :, channel], expected_marginals)
        torch.testing.assert_close(confidences[:, :, channel], expected)


@pytest.mark.parametrize("labels", [BIO, BIOES], ids=["bio", "bioes"])
def test_independent_confidence_is_the_probability_under_the_product_distribution(labels):
    generator = torch.Generator().manual_seed(6)
    length = 4
    probabilities = torch.randn(1, length, 1, len(labels), generator=generator).mul(2).softmax(-1)
    continues = entity_continuations(labels)
    sequences = list(itertools.product(range(len(labels)), repeat=length))

    def probability(sequence):
        return math.prod(float(probabilities[0, k, 0, tag]) for k, tag in enumerate(sequence))

    for path in [(1, 2, 0, 3), (0, 2, 2, 1), (3, 4, 4, 4), (1, 1, 2, 0)]:
        tags = torch.tensor(path)[None, :, None]
        rows = independent_confidences(probabilities, tags, torch.ones(1, length, dtype=torch.bool),
                                       continues)[0, :, 0]
        for first in range(length):
            for last in range(first, length):
                expected = entity_probability(probability, sequences, path, first, last, continues)
                assert span_confidence(rows, first, last) == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_independent_confidences_are_zero_at_padding_and_close_at_the_last_word():
    probabilities = torch.full((2, 3, 1, 3), 1 / 3)
    tags = torch.tensor([[1, 2, 2], [1, 2, 0]])[..., None]
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rows = independent_confidences(probabilities, tags, mask, entity_continuations(["O", "B-X", "I-X"]))
    assert torch.all(rows[1, 2] == 0)
    assert rows[0, 2, 0, SPAN_CLOSE] == 0 and rows[1, 1, 0, SPAN_CLOSE] == 0  # nothing follows
    # B-X I-X I-X with uniform words: (1/3)^3 for the tags
    assert span_confidence(rows[0, :, 0], 0, 2) == pytest.approx((1 / 3) ** 3)
    # the entity B-X I-X of the second row ends at its last real word: the closing factor is 1
    assert span_confidence(rows[1, :2, 0], 0, 1) == pytest.approx((1 / 3) ** 2)
    assert rows[0, 1, 0, SPAN_OPEN] == pytest.approx(math.log(1 / 3 * (1 - 2 / 3)))  # B-X/I-X before I-X


def test_entity_continuations_follow_the_lenient_reading_of_tags():
    continues = entity_continuations(["O", "B-A", "I-A", "E-A", "S-A", "I-B"])
    index = {tag: i for i, tag in enumerate(["O", "B-A", "I-A", "E-A", "S-A", "I-B"])}
    yes = {("B-A", "I-A"), ("B-A", "E-A"), ("I-A", "I-A"), ("I-A", "E-A"), ("I-B", "I-B")}
    for source, target in itertools.product(index, index):
        assert continues[index[source]][index[target]] == ((source, target) in yes), (source, target)
    for a, b in itertools.product(["O", "B", "I"], repeat=2):  # untyped channel tags
        assert entity_continuations(["O", "B", "I"])[["O", "B", "I"].index(a)][["O", "B", "I"].index(b)] == (
            a in ("B", "I") and b == "I")
    assert split_tag("I")[1] is None


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    path = tiny_backbone("bert", tmp_path_factory.mktemp("backbones"))
    return path, AutoTokenizer.from_pretrained(path)


ID2LABEL = {0: "O", 1: "B-DIS", 2: "I-DIS", 3: "B-DRUG", 4: "I-DRUG"}
TEXTS = ["The patient was admitted with acute myocardial infarction.",
         "Aspirin 100 mg daily; heparin stopped."]


@pytest.mark.parametrize("settings", [{}, {"use_crf": True}, {"channel_types": ["DIS", "DRUG"]},
                                      {"channel_types": ["DIS", "DRUG"], "use_crf": True}],
                         ids=["softmax", "crf", "sigmoid", "multilabel-crf"])
def test_every_decoded_entity_gets_a_confidence_in_the_unit_interval(backbone, settings):
    path, tokenizer = backbone
    torch.manual_seed(0)
    model = TokenClassificationModel.from_backbone(path, tokenizer, ID2LABEL, **settings).eval()
    with torch.no_grad():
        model.head.classifier.bias.normal_(0, 3)  # a random head that decodes some entities
    encoding = tokenizer(TEXTS, padding=True, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoding.pop("offset_mapping")
    plain = model.decode_spans(encoding["input_ids"], encoding["attention_mask"], offsets)
    scored = model.decode_spans(encoding["input_ids"], encoding["attention_mask"], offsets,
                                return_scores=True)
    assert [[span[:3] for span in row] for row in scored] == plain
    assert sum(len(row) for row in scored) > 0
    assert all(0.0 <= span[3] <= 1.0 for row in scored for span in row)
    output = model(**encoding)
    words = model.words(encoding["input_ids"], encoding["attention_mask"])
    confidences = output.word_confidences
    expected_shape = (*encoding["input_ids"].shape, *(() if "channel_types" not in settings else (2,)), 3)
    assert tuple(confidences.shape) == expected_shape
    outside_words = ~words.word_start
    assert torch.all(confidences[outside_words] == 0)
    assert torch.all(confidences <= 0)  # log-probabilities
