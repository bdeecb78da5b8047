"""benchmarks/ctebmsp.py --aggregate: per-type means over seeds and paired differences from the flat model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ctebmsp.py"


@pytest.fixture(scope="module")
def ctebmsp():
    return load_script(SCRIPT, "ctebmsp_benchmark")


def summary(seed: int, sigmoid: dict, flat: dict, decoding: str = "constrained") -> dict:
    def row(scores: dict) -> dict:
        return {"decoding": decoding, "test_micro_f1": scores.pop("micro"), "test_f1_per_type": scores}

    return {"benchmark": "ct_ebm_sp", "backbone": "default", "epochs": 3, "batch_size": 16, "lr": 1e-4,
            "max_length": 128, "overrides": [], "train_docs": 720, "dev_docs": 120, "seed": seed,
            "systems": {"multilabel": row(dict(sigmoid)), "flat_longest": row(dict(flat))}}


RUNS = {
    "a.json": summary(
        1, {"ANAT": 75.0, "PROC": 72.0, "micro": 74.0}, {"ANAT": 20.0, "PROC": 72.5, "micro": 68.0}
    ),
    "b.json": summary(
        2, {"ANAT": 74.0, "PROC": 71.0, "micro": 74.5}, {"ANAT": 19.0, "PROC": 70.0, "micro": 68.5}
    ),
    "c.json": summary(
        3, {"ANAT": 76.0, "PROC": 73.0, "micro": 75.0}, {"ANAT": 21.0, "PROC": 72.0, "micro": 69.0}
    ),
}


def test_means_sds_and_paired_differences(ctebmsp):
    result = ctebmsp.aggregate(RUNS)
    assert [run["seed"] for run in result["runs"]] == [1, 2, 3] and result["epochs"] == 3
    sigmoid = result["systems"]["multilabel"]
    assert sigmoid["runs"] == 3
    assert sigmoid["mean"] == {"ANAT": 75.0, "PROC": 72.0, "micro": 74.5}
    assert sigmoid["sd"]["ANAT"] == 1.0 and sigmoid["sd"]["micro"] == 0.5
    proc = result["paired_vs_flat_longest"]["multilabel"]["PROC"]
    assert proc["differences"] == [-0.5, 1.0, 1.0] and proc["mean"] == 0.5
    assert proc["wins"] == 2 and proc["losses"] == 1 and proc["runs"] == 3
    assert proc["sd"] == pytest.approx(0.87, abs=0.01) and proc["t"] == pytest.approx(
        0.5 / (0.866 / 3**0.5), abs=0.01
    )
    assert proc["sign_test_p"] == 0.5  # two or more wins of three coin flips: 4/8
    anat = result["paired_vs_flat_longest"]["multilabel"]["ANAT"]
    assert anat["wins"] == 3 and anat["sign_test_p"] == 0.125 and anat["sd"] == 0.0 and anat["t"] is None
    assert "flat_longest" not in result["paired_vs_flat_longest"]  # the reference is not compared with itself


def test_runs_of_different_budgets_seeds_or_decoders_are_refused(ctebmsp):
    other_budget = {**RUNS, "d.json": {**summary(4, {"PROC": 1.0, "micro": 1.0}, {"PROC": 1.0, "micro": 1.0}),
                                       "epochs": 4}}
    with pytest.raises(ValueError, match="d.json: epochs differ from a.json"):
        ctebmsp.aggregate(other_budget)
    with pytest.raises(ValueError, match="repeat a seed"):
        ctebmsp.aggregate({**RUNS, "d.json": RUNS["a.json"]})
    argmax = summary(
        4, {"ANAT": 1.0, "PROC": 1.0, "micro": 1.0}, {"ANAT": 1.0, "PROC": 1.0, "micro": 1.0}, "argmax"
    )
    with pytest.raises(ValueError, match="multilabel was decoded differently"):
        ctebmsp.aggregate({**RUNS, "d.json": argmax})


def test_command_line_prints_json_and_draws_error_bars(tmp_path):
    for name, run in RUNS.items():
        (tmp_path / name).write_text(json.dumps(run))
    plot = tmp_path / "seeds.png"
    out = subprocess.run([sys.executable, str(SCRIPT), "--aggregate", *(str(tmp_path / n) for n in RUNS),
                          "--plot", str(plot)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["systems"]["flat_longest"]["mean"]["PROC"] == 71.5
    assert plot.stat().st_size > 10_000
