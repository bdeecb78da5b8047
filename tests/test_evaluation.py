"""Evaluation: the MultiCardioNER toy results, exact vs overlap
matching, seqeval strict, the evaluate module."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cardioner.data.document import CorpusError, Document, Span
from cardioner.evaluation import (
    bootstrap_ci,
    format_table,
    metric_path,
    multicardioner_score,
    score_spans,
    seqeval_scores,
)
from cardioner.plots import plot_per_type

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOY = SHARED_DATA / "multicardioner_eval_toy"


def expected_toy_results() -> list[tuple[Path, dict[str, str]]]:
    """(prediction TSV, {"precision", "recall", "f_score"} as printed) for each official result file."""
    cases = []
    for result_path in sorted((TOY / "pred" / "results").glob("*.txt")):
        pred_name = re.match(r"multicardioner_results_track1_\d{8}_\d{6}_(.+)\.txt$", result_path.name).group(
            1
        )
        text = result_path.read_text(encoding="utf-8")
        printed = {
            key: re.search(rf"^Micro-average {label}: (\S+)$", text, re.MULTILINE).group(1)
            for key, label in (("precision", "precision"), ("recall", "recall"), ("f_score", "F-score"))
        }
        cases.append((TOY / "pred" / f"{pred_name}.tsv", printed))
    return cases


@pytest.mark.skipif(not TOY.is_dir(), reason=f"shared data not found at {TOY}")
def test_multicardioner_toy_results_reproduced_exactly():
    cases = expected_toy_results()
    assert len(cases) == 7
    gold_tsv = TOY / "ref" / "multicardioner_test_task1_toy.tsv"
    for pred_tsv, printed in cases:
        scores = multicardioner_score(gold_tsv, pred_tsv)
        got = {key: str(scores[key]) for key in printed}
        assert got == printed, pred_tsv.name


@pytest.mark.skipif(not TOY.is_dir(), reason=f"shared data not found at {TOY}")
def test_multicardioner_rules_mapping_and_bad_input(tmp_path):
    gold_tsv = TOY / "ref" / "multicardioner_test_task1_toy.tsv"
    extra = multicardioner_score(
        gold_tsv, TOY / "pred" / "multicardioner_test_task1_all_correct+files_not_in_gs.tsv"
    )
    assert (extra["fp"], extra["ignored_predictions"]) == (0, 4)  # documents absent from the gold are ignored
    repeated = multicardioner_score(
        gold_tsv, TOY / "pred" / "multicardioner_test_task1_all_correct+repeated.tsv"
    )
    assert (repeated["tp"], repeated["fp"], repeated["duplicates_removed"]) == (52, 0, 7)

    lines = gold_tsv.read_text(encoding="utf-8").splitlines()
    masked = tmp_path / "masked.tsv"
    masked.write_text(
        "\n".join([lines[0]] + [re.sub(r"^(\S+)", r"masked_\1", line) for line in lines[1:]]) + "\n"
    )
    names = {row.split("\t")[0] for row in lines[1:]}
    mapped = multicardioner_score(gold_tsv, masked, mapping={f"masked_{name}": name for name in names})
    assert (mapped["tp"], mapped["f_score"]) == (52, 1.0)
    with_bom = tmp_path / "bom.tsv"  # written by a Windows tool: the official scorer (pandas) reads it
    with_bom.write_text("\ufeff" + gold_tsv.read_text(encoding="utf-8"), encoding="utf-8")
    assert (
        multicardioner_score(gold_tsv, with_bom)["tp"],
        multicardioner_score(with_bom, gold_tsv)["f_score"],
    ) == (52, 1.0)
    assert multicardioner_score(gold_tsv, masked, mapping={})["unmapped_predictions"] == 52

    bad = tmp_path / "bad.tsv"
    bad.write_text("filename\tlabel\tstart_span\tend_span\ttext\ndoc\tX\tten\t12\tab\n")
    with pytest.raises(CorpusError, match=r"bad\.tsv:2: offsets must be integers, got 'ten'"):
        multicardioner_score(gold_tsv, bad)


GOLD = {
    "d1": [Span(0, 10, "DISO"), Span(5, 20, "PROC"), Span(30, 35, "CHEM")],  # DISO inside PROC: multi-label
    "d2": [Span(0, 4, "DISO")],
}
PRED = {
    "d1": [
        Span(0, 10, "DISO"),  # exact
        Span(6, 20, "PROC"),  # overlap only
        Span(30, 35, "CHEM"),
        Span(30, 35, "CHEM"),  # duplicate: counted once
        Span(40, 45, "DISO"),  # wrong
    ],
    # d2: no predictions at all -> its gold span is a false negative
}


def counts(scores: dict) -> dict[str, tuple[int, int, int]]:
    return {label: (s["tp"], s["fp"], s["fn"]) for label, s in scores["per_type"].items()}


def test_exact_and_overlap_on_multilabel_spans():
    exact = score_spans(GOLD, PRED, match="exact")
    assert counts(exact) == {"CHEM": (1, 0, 0), "DISO": (1, 1, 1), "PROC": (0, 1, 1)}
    assert exact["duplicates_removed"] == {"gold": 0, "pred": 1}
    assert (exact["micro"]["tp"], exact["micro"]["fp"], exact["micro"]["fn"]) == (2, 2, 2)
    assert exact["micro"]["f1"] == pytest.approx(0.5)
    assert exact["macro"]["f1"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert exact["per_document"] == {"d1": {"tp": 2, "fp": 2, "fn": 1}, "d2": {"tp": 0, "fp": 0, "fn": 1}}

    overlap = score_spans(GOLD, PRED, match="overlap")
    assert counts(overlap) == {"CHEM": (1, 0, 0), "DISO": (1, 1, 1), "PROC": (1, 0, 0)}
    # The DISO prediction overlaps the gold PROC span, but types never match across labels.
    assert counts(score_spans({"d": [Span(0, 10, "DISO")]}, {"d": [Span(0, 10, "PROC")]})) == {
        "DISO": (0, 0, 1),
        "PROC": (0, 1, 0),
    }


def test_overlap_matching_is_one_to_one_and_greedy_by_largest_overlap():
    # One long prediction covering two gold spans matches only one of them (the larger overlap).
    one_to_one = score_spans(
        {"d": [Span(0, 10, "A"), Span(12, 20, "A")]}, {"d": [Span(0, 20, "A")]}, match="overlap"
    )
    assert counts(one_to_one) == {"A": (1, 0, 1)}
    # Two predictions on one gold span: the one sharing more characters is the match, the other is a FP.
    greedy = score_spans(
        {"d": [Span(0, 10, "A")]}, {"d": [Span(0, 3, "A"), Span(2, 10, "A")]}, match="overlap"
    )
    assert counts(greedy) == {"A": (1, 1, 0)}
    # Greedy takes the best-aligned pair first (0-10 with 2-10, 8 characters), even where pairing 0-10 with
    # 0-3 and 9-12 with 2-10 would match both: the documented rule, not a maximum matching.
    not_maximum = score_spans(
        {"d": [Span(0, 10, "A"), Span(9, 12, "A")]},
        {"d": [Span(2, 10, "A"), Span(0, 3, "A")]},
        match="overlap",
    )
    assert counts(not_maximum) == {"A": (1, 1, 1)}


def test_missing_documents_and_input_forms():
    pred = {"d1": GOLD["d1"], "d2": GOLD["d2"], "unseen": [Span(0, 3, "DISO")]}
    counted = score_spans(GOLD, pred)
    assert counted["micro"]["fp"] == 1 and counted["num_documents"] == 3
    assert counted["unknown_documents"] == {"documents": 1, "spans": 1, "rule": "count"}
    ignored = score_spans(GOLD, pred, unknown_documents="ignore")
    assert ignored["micro"]["f1"] == 1.0 and ignored["num_documents"] == 2
    assert ignored["unknown_documents"]["documents"] == 1

    gold_docs = [Document(doc_id, "x" * 50, spans) for doc_id, spans in GOLD.items()]
    as_dicts = {"d1": [{"start": s.start, "end": s.end, "label": s.label} for s in PRED["d1"]]}
    assert score_spans(gold_docs, as_dicts) == score_spans(GOLD, PRED)

    with pytest.raises(ValueError, match="'fuzzy'"):
        score_spans(GOLD, PRED, match="fuzzy")
    with pytest.raises(ValueError, match="'d1' appears twice"):
        score_spans(gold_docs + gold_docs[:1], PRED)
    with pytest.raises(ValueError, match="bad offsets 5-2"):
        score_spans({"d": [Span(5, 2, "A")]}, {})


def test_discontinuous_spans_need_the_same_fragments_for_an_exact_match():
    gold = {"d": [Span(0, 20, "A", ((0, 5), (15, 20)))]}
    pred = {"d": [Span(0, 20, "A")]}
    assert counts(score_spans(gold, pred, match="exact")) == {"A": (0, 1, 1)}
    assert counts(score_spans(gold, pred, match="overlap")) == {"A": (1, 0, 0)}


def test_scores_serialise_to_json_and_format_as_a_table(tmp_path):
    scores = score_spans(GOLD, PRED)
    assert json.loads(json.dumps(scores)) == scores
    table = format_table(scores)
    assert table.splitlines()[0] == "| type | precision | recall | F1 | TP | FP | FN | support |"
    assert "| DISO | 0.5000 | 0.5000 | 0.5000 | 1 | 1 | 1 | 2 |" in table
    assert "| **micro** | 0.5000 | 0.5000 | 0.5000 | 2 | 2 | 2 | 4 |" in table
    png = plot_per_type(scores, tmp_path / "plots" / "per_type.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seqeval_strict_iob2_on_a_known_case():
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "I-LOC", "O"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O", "O"]]  # I- start is invalid under strict IOB2
    scores = seqeval_scores(gold, pred)
    assert counts(scores) == {"LOC": (1, 1, 1), "PER": (0, 0, 1)}
    assert scores["micro"]["precision"] == pytest.approx(0.5)
    assert scores["micro"]["recall"] == pytest.approx(1 / 3)
    reference = classification_report(
        gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    for label in ("LOC", "PER"):
        assert scores["per_type"][label]["f1"] == pytest.approx(reference[label]["f1-score"])
    assert scores["micro"]["f1"] == pytest.approx(reference["micro avg"]["f1-score"])
    assert scores["macro"]["f1"] == pytest.approx(reference["macro avg"]["f1-score"])
    with pytest.raises(ValueError, match="sequence 1: 3 gold tags but 2 predicted tags"):
        seqeval_scores(gold, [pred[0], ["O", "O"]])


def test_evaluate_module_loads_offline_and_agrees_with_score_spans(tmp_path):
    references = [[{"start": s.start, "end": s.end, "label": s.label} for s in GOLD[d]] for d in ("d1", "d2")]
    predictions = [
        [{"start": s.start, "end": s.end, "label": s.label} for s in PRED.get(d, [])] for d in ("d1", "d2")
    ]
    script = (
        "import evaluate, json, sys\n"
        "metric = evaluate.load(sys.argv[1])\n"
        "data = json.loads(sys.argv[2])\n"
        "print(json.dumps([metric.compute(**data, match=m) for m in ('exact', 'overlap')]))\n"
    )
    # A fresh process, offline, in a folder where cardioner is not importable from the working directory.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HOME=str(tmp_path / "hf"), PYTHONPATH="")
    data = json.dumps({"predictions": predictions, "references": references})
    out = subprocess.run(
        [sys.executable, "-c", script, metric_path(), data],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    from_module = json.loads(out.stdout.strip().splitlines()[-1])
    for got, match in zip(from_module, ("exact", "overlap"), strict=True):
        expected = score_spans({"0": GOLD["d1"], "1": GOLD["d2"]}, {"0": PRED["d1"]}, match=match)
        assert got == json.loads(json.dumps(expected))


def test_bootstrap_ci_is_reproducible_with_a_seed():
    per_doc = {f"d{i}": {"tp": i % 4, "fp": i % 3, "fn": (i + 1) % 2} for i in range(40)}
    first = bootstrap_ci(per_doc, n=500, seed=7)
    assert first == bootstrap_ci(list(per_doc.values()), n=500, seed=7)
    assert first != bootstrap_ci(per_doc, n=500, seed=8)
    for name in ("precision", "recall", "f1"):
        assert first[name]["low"] <= first[name]["value"] <= first[name]["high"]
    assert first["f1"]["value"] == pytest.approx(score_f1(per_doc))
    perfect = bootstrap_ci([(3, 0, 0), (1, 0, 0)], n=50, seed=0)
    assert (perfect["f1"]["low"], perfect["f1"]["high"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="confidence must be in"):
        bootstrap_ci(per_doc, confidence=95)


def score_f1(per_doc: dict) -> float:
    tp, fp, fn = (sum(c[k] for c in per_doc.values()) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn)
