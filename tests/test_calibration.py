"""Calibration of span confidences: outcomes from gold and predicted documents, ECE, MCE, Brier, the
diagram."""

from __future__ import annotations

import pytest

from cardioner.calibration import calibration, span_outcomes
from cardioner.data.document import Document, Span
from cardioner.plots import plot_reliability


def test_outcomes_are_exact_matches_of_scored_predicted_spans():
    gold = [Document("a", "x" * 30, [Span(0, 5, "DIS"), Span(10, 15, "DRUG")]), Document("b", "y" * 9, [])]
    predicted = [
        Document("a", "x" * 30, [Span(0, 5, "DIS", score=0.9), Span(10, 14, "DRUG", score=0.6),
                                 Span(20, 25, "DIS")]),  # no score: not an outcome
        Document("b", "y" * 9, [Span(0, 3, "DIS", score=0.2)]),
        Document("c", "z" * 9, [Span(0, 3, "DIS", score=0.7)]),  # not in gold: wrong
    ]
    assert span_outcomes(gold, predicted) == [(0.9, True), (0.6, False), (0.2, False), (0.7, False)]


def test_ece_mce_and_brier_by_hand():
    outcomes = [(0.95, True), (0.95, True), (0.95, False), (0.95, True),  # bin 9: conf 0.95, acc 0.75
                (0.3, False), (0.3, True),  # bin 3: conf 0.3, acc 0.5
                (1.0, True)]  # bin 9 too (1.0 belongs to the last bin)
    result = calibration(outcomes, num_bins=10)
    top = result["bins"][9]
    assert top["spans"] == 5 and top["confidence"] == pytest.approx(0.96)
    assert top["accuracy"] == pytest.approx(0.8)
    assert result["bins"][3]["spans"] == 2 and result["bins"][0]["accuracy"] is None
    assert result["ece"] == pytest.approx(5 / 7 * 0.16 + 2 / 7 * 0.2)
    assert result["mce"] == pytest.approx(0.2)
    brier = (3 * 0.05**2 + 0.95**2 + 0.3**2 + 0.7**2 + 0.0) / 7
    assert result["brier"] == pytest.approx(brier)
    assert result["spans"] == 7 and result["accuracy"] == pytest.approx(5 / 7)


def test_perfectly_calibrated_outcomes_have_zero_ece_and_no_outcome_gives_none():
    outcomes = [(0.25, True)] + [(0.25, False)] * 3 + [(0.75, True)] * 3 + [(0.75, False)]
    assert calibration(outcomes, num_bins=4)["ece"] == pytest.approx(0.0)
    empty = calibration([], num_bins=5)
    assert empty["ece"] is None and empty["spans"] == 0 and len(empty["bins"]) == 5
    with pytest.raises(ValueError, match=r"\[0, 1\], got 1.5"):
        calibration([(1.5, True)])
    with pytest.raises(ValueError, match="num_bins"):
        calibration([], num_bins=0)


def test_reliability_diagram_is_a_png(tmp_path):
    result = calibration([(0.9, True), (0.8, False), (0.4, True), (0.1, False)])
    path = plot_reliability(result, tmp_path / "figures" / "reliability.png", title="test model")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_reliability(calibration([]), tmp_path / "empty.png").stat().st_size > 0
