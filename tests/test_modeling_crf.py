"""The CRF of modeling.py against pytorch-crf (the oracle) and
against brute-force enumeration of tag sequences."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchcrf

from cardioner.modeling import CRF, scheme_viterbi, split_tag, transition_constraints

pytestmark = pytest.mark.filterwarnings("ignore:where received a uint8")  # pytorch-crf's own deprecation

BIO = ["O", "B-A", "I-A", "B-B", "I-B"]
BIOES = ["O", "B-A", "I-A", "E-A", "S-A"]


def ragged_batch(batch: int, seq_len: int, num_tags: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(batch, seq_len, num_tags, generator=generator)
    tags = torch.randint(0, num_tags, (batch, seq_len), generator=generator)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    mask = torch.arange(seq_len)[None, :] < lengths[:, None]
    return emissions, tags, mask


def paired_crfs(num_tags: int, seed: int) -> tuple[CRF, torchcrf.CRF]:
    torch.manual_seed(seed)
    reference = torchcrf.CRF(num_tags, batch_first=True)
    ours = CRF(num_tags)
    ours.load_state_dict(reference.state_dict())
    return ours, reference


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("reduction", ["sum", "mean", "token_mean"])
def test_nll_and_viterbi_equal_pytorch_crf_on_ragged_batches(seed, reduction):
    ours, reference = paired_crfs(7, seed)
    emissions, tags, mask = ragged_batch(6, 11, 7, seed)
    expected = -reference(emissions, tags, mask.to(torch.uint8), reduction=reduction)
    torch.testing.assert_close(
        ours.nll(emissions, tags, mask, reduction=reduction), expected, atol=1e-5, rtol=1e-5
    )
    assert ours.decode(emissions, mask) == reference.decode(emissions, mask.to(torch.uint8))
    assert ours.decode(emissions) == reference.decode(emissions)


def test_gradients_equal_pytorch_crf():
    ours, reference = paired_crfs(5, 0)
    emissions, tags, mask = ragged_batch(4, 9, 5, 1)
    ours_emissions = emissions.clone().requires_grad_(True)
    reference_emissions = emissions.clone().requires_grad_(True)
    ours.nll(ours_emissions, tags, mask, reduction="sum").backward()
    (-reference(reference_emissions, tags, mask.to(torch.uint8), reduction="sum")).backward()
    torch.testing.assert_close(ours_emissions.grad, reference_emissions.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.transitions.grad, reference.transitions.grad, atol=1e-5, rtol=1e-5)


def test_trained_pytorch_crf_state_dict_loads_and_decodes_identically():
    torch.manual_seed(0)
    reference = torchcrf.CRF(9, batch_first=True)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for step in range(20):
        emissions, tags, mask = ragged_batch(8, 12, 9, step)
        optimizer.zero_grad()
        (-reference(emissions, tags, mask.to(torch.uint8))).backward()
        optimizer.step()
    state = {f"crf.{key}": value for key, value in reference.state_dict().items()}  # as inside a model
    ours = CRF(9)
    ours.load_state_dict({key.removeprefix("crf."): value for key, value in state.items()}, strict=True)
    emissions, _, mask = ragged_batch(16, 20, 9, 99)
    assert ours.decode(emissions, mask) == reference.decode(emissions, mask.to(torch.uint8))


# -- brute force ---------------------------------------------------------------------------------------------


def valid_bio(sequence: tuple[int, ...], labels: list[str]) -> bool:
    """BIO (IOB2) validity written out directly: I-X only right after B-X or I-X."""
    previous = None
    for tag in sequence:
        prefix, entity_type = split_tag(labels[tag])
        if prefix == "I" and (
            previous is None or previous[0] not in ("B", "I") or previous[1] != entity_type
        ):
            return False
        previous = (prefix, entity_type)
    return True


def valid_bioes(sequence: tuple[int, ...], labels: list[str]) -> bool:
    """BIOES validity: B-X (I-X)* E-X, or S-X, or O."""
    open_type = None
    for tag in sequence:
        prefix, entity_type = split_tag(labels[tag])
        if open_type is None:
            if prefix in ("I", "E"):
                return False
            if prefix == "B":
                open_type = entity_type
        else:
            if prefix not in ("I", "E") or entity_type != open_type:
                return False
            if prefix == "E":
                open_type = None
    return open_type is None


def sequence_score(crf: CRF, emissions: torch.Tensor, sequence: tuple[int, ...]) -> torch.Tensor:
    score = crf.start_transitions[sequence[0]] + emissions[0, sequence[0]]
    for position in range(1, len(sequence)):
        score = (
            score
            + crf.transitions[sequence[position - 1], sequence[position]]
            + emissions[position, sequence[position]]
        )
    return score + crf.end_transitions[sequence[-1]]


def brute_force(crf: CRF, emissions: torch.Tensor, valid) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """(log partition, {sequence: score}, marginals (seq_len, num_tags)) over every valid sequence."""
    seq_len, num_tags = emissions.shape
    scores = {
        sequence: sequence_score(crf, emissions, sequence)
        for sequence in itertools.product(range(num_tags), repeat=seq_len)
        if valid(sequence)
    }
    log_partition = torch.logsumexp(torch.stack(list(scores.values())), dim=0)
    marginals = torch.zeros(seq_len, num_tags)
    for sequence, score in scores.items():
        probability = (score - log_partition).exp()
        for position, tag in enumerate(sequence):
            marginals[position, tag] += probability
    return log_partition, scores, marginals


@pytest.mark.parametrize(
    ("labels", "valid"),
    [(BIO, valid_bio), (BIOES, valid_bioes), (BIO, None)],
    ids=["bio", "bioes", "unconstrained"],
)
def test_constrained_nll_viterbi_and_marginals_equal_brute_force(labels, valid):
    torch.manual_seed(0)
    constraints = transition_constraints(labels) if valid is not None else (None, None, None)
    crf = CRF(len(labels), *constraints)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    is_valid = (lambda sequence: True) if valid is None else (lambda sequence: valid(sequence, labels))
    lengths = [5, 3, 1, 4]
    emissions = torch.randn(len(lengths), 5, len(labels))
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    paths = crf.decode(emissions, mask)
    marginals = crf.marginals(emissions, mask)
    generator = torch.Generator().manual_seed(1)
    for row, length in enumerate(lengths):
        log_partition, scores, expected_marginals = brute_force(crf, emissions[row, :length], is_valid)
        best = max(scores, key=lambda sequence: scores[sequence].item())
        assert tuple(paths[row]) == best
        valid_sequences = list(scores)
        gold = valid_sequences[int(torch.randint(len(valid_sequences), (1,), generator=generator))]
        tags = torch.zeros(1, 5, dtype=torch.long)
        tags[0, :length] = torch.tensor(gold)
        nll = crf.nll(emissions[row : row + 1], tags, mask[row : row + 1], reduction="sum")
        torch.testing.assert_close(nll, log_partition - scores[gold], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(marginals[row, :length], expected_marginals, atol=1e-5, rtol=1e-5)
        assert torch.all(marginals[row, length:] == 0)


def test_bio_constraints_forbid_exactly_the_invalid_moves():
    start, transitions, end = transition_constraints(BIO)
    assert start == [True, True, False, True, False]
    assert end == [True] * 5
    forbidden = {(BIO[i], BIO[j]) for i in range(5) for j in range(5) if not transitions[i][j]}
    assert forbidden == {
        ("O", "I-A"),
        ("O", "I-B"),
        ("B-A", "I-B"),
        ("I-A", "I-B"),
        ("B-B", "I-A"),
        ("I-B", "I-A"),
    }
    assert transition_constraints(["O", "B", "I"])[0] == [True, True, False]  # untyped multi-label channel


def test_channels_equal_independent_crfs():
    torch.manual_seed(0)
    channels = CRF(3, *transition_constraints(["O", "B", "I"]), num_channels=4)
    emissions = torch.randn(5, 7, 4, 3)
    tags = torch.randint(0, 3, (5, 7, 4))
    mask = torch.arange(7)[None, :] < torch.tensor([7, 2, 5, 1, 6])[:, None]
    per_channel = []
    for channel in range(4):
        single = CRF(3, *transition_constraints(["O", "B", "I"]))
        single.load_state_dict({name: value[channel] for name, value in channels.state_dict().items()})
        per_channel.append(single)
    nll = channels.nll(emissions, tags, mask, reduction="none")  # shape: (batch, channels)
    paths = channels.decode(emissions, mask)
    marginals = channels.marginals(emissions, mask)
    for channel, single in enumerate(per_channel):
        torch.testing.assert_close(
            nll[:, channel], single.nll(emissions[:, :, channel], tags[:, :, channel], mask, "none")
        )
        assert [row[channel] for row in paths] == single.decode(emissions[:, :, channel], mask)
        torch.testing.assert_close(marginals[:, :, channel], single.marginals(emissions[:, :, channel], mask))


def test_empty_sequences_decode_to_nothing_and_cost_nothing():
    crf = CRF(4)
    emissions = torch.randn(3, 5, 4)
    mask = torch.arange(5)[None, :] < torch.tensor([0, 5, 2])[:, None]
    paths = crf.decode(emissions, mask)
    assert paths[0] == [] and len(paths[1]) == 5 and len(paths[2]) == 2
    nll = crf.nll(emissions, torch.zeros(3, 5, dtype=torch.long), mask, reduction="none")
    assert nll[0] == 0 and torch.isfinite(nll).all()
    assert crf.decode(torch.randn(2, 0, 4)) == [[], []]


def test_public_entry_points_reject_bad_inputs_and_show_the_value():
    crf = CRF(4)
    with pytest.raises(ValueError, match="got 3"):
        crf.decode(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        crf.decode(torch.randn(2, 5, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="left aligned"):
        crf.decode(torch.randn(2, 3, 4), torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match=r"\[7\]"):
        crf.nll(torch.randn(1, 2, 4), torch.tensor([[0, 7]]))
    with pytest.raises(ValueError, match="'max'"):
        crf.nll(torch.randn(1, 2, 4), torch.tensor([[0, 1]]), reduction="max")
    with pytest.raises(ValueError, match="invalid number of tags: 0"):
        CRF(0)


@pytest.mark.parametrize("channels", [None, 3], ids=["one_chain", "channels"])
def test_scheme_viterbi_is_the_best_allowed_path_by_enumeration(channels):
    """Constrained decoding without a CRF: the best-scoring path among those the BIO scheme allows, found by
    enumerating every tag sequence; per channel when the scores have one."""
    labels = ["O", "B-A", "I-A", "B-B", "I-B"] if channels is None else ["O", "B", "I"]
    start, allowed, end = constraints = transition_constraints(labels)
    generator = torch.Generator().manual_seed(3)
    shape = (4, 5, len(labels)) if channels is None else (4, 5, channels, len(labels))
    scores = torch.randn(*shape, generator=generator) * 3
    lengths = [5, 3, 1, 0]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    paths = scheme_viterbi(scores, mask, constraints)
    assert paths.shape == scores.shape[:-1]
    for row, length in enumerate(lengths):
        for channel in [None] if channels is None else range(channels):
            chain = scores[row, :length] if channel is None else scores[row, :length, channel]
            valid = [
                p
                for p in itertools.product(range(len(labels)), repeat=length)
                if not p
                or (start[p[0]] and end[p[-1]] and all(allowed[a][b] for a, b in itertools.pairwise(p)))
            ]
            best = max(valid, key=lambda p: sum(chain[i, t].item() for i, t in enumerate(p)))
            got = paths[row, :length] if channel is None else paths[row, :length, channel]
            assert got.tolist() == list(best), (row, channel)
    unconstrained = scores.argmax(-1)
    assert not torch.equal(paths[0], unconstrained[0]), "the constraints change nothing here: a weak test"
