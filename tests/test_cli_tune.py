"""``cardioner tune`` as a newcomer meets it (issue 21): Ctrl-C ends with one line that says what was kept and
how to go on, the rerun's summary counts the trials asked for, the interrupted trial says so in trials.csv,
and best_config.yaml's reproduce line works from any folder.

The fast tests replace a trial's training (``Objective.run``) by a score, so a study of several trials takes
well under a second; the slow one sends a real SIGINT to a real ``cardioner tune`` process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ncbi_subset import base_config
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.config import Config, load_config

optuna = pytest.importorskip("optuna")
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def trials_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_ctrl_c_ends_tune_with_one_line_and_the_rerun_counts_the_trials_asked_for(ncbi_subset, tmp_path,
                                                                                  monkeypatch):
    """Done-when 1 (the SIGINT message and exit code 130, the trials count): trial 1 is stopped by Ctrl-C;
    the command says what was kept in one line and exits 130; trials.csv says the FAIL row was interrupted;
    the rerun goes on to the 3 finished trials asked for and says "trials": 3."""
    from cardioner.tuning.optuna_study import Objective

    calls = []

    def run(self, trial):
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt
        trial.set_user_attr("config", self.base.to_dict())
        return 0.1 * len(calls)

    monkeypatch.setattr(Objective, "run", run)
    config = write_config(tmp_path / "base.yaml", base_config(ncbi_subset))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["tune", "--config", str(config), "--trials", "3", "--storage", storage, "--output",
            str(tmp_path / "out")]
    interrupted = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert interrupted.exit_code == 130, interrupted.output
    lines = [line for line in interrupted.stderr.splitlines() if line.strip()]
    assert lines == [f"interrupted: 1 finished trial written to {tmp_path / 'out' / 'trials.csv'}; the "
                     f"study is kept in {storage}: rerun the same command to go on to 3 finished trials"]
    assert "Traceback" not in interrupted.output and "KeyboardInterrupt" not in interrupted.output
    rows = trials_csv(tmp_path / "out" / "trials.csv")
    assert [(row["state"], row["error"]) for row in rows] == [("COMPLETE", ""),
                                                               ("FAIL", "interrupted (Ctrl-C)")]

    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    summary = json.loads(rerun.stdout[rerun.stdout.index("{"):])
    assert (summary["trials"], summary["target"], summary["complete"]) == (3, 3, 3)
    assert (summary["interrupted"], summary["failed"]) == (1, 0)
    assert len(calls) == 4  # the interrupted trial is not counted: two more trials ran


def test_an_in_memory_study_says_a_rerun_starts_again_and_how_to_keep_one(ncbi_subset, tmp_path, monkeypatch):
    from cardioner.tuning.optuna_study import Objective

    def run(self, trial):
        raise KeyboardInterrupt

    monkeypatch.setattr(Objective, "run", run)
    config = write_config(tmp_path / "base.yaml", base_config(ncbi_subset))
    result = CliRunner().invoke(app, ["tune", "--config", str(config), "--trials", "3", "--output",
                                      str(tmp_path / "out")])
    assert result.exit_code == 130
    assert result.stderr.strip().startswith("interrupted: 0 finished trials written to ")
    assert "give --storage sqlite:///study.db to make a study resumable" in result.stderr


def test_the_reproduce_line_of_best_config_runs_from_another_folder(ncbi_subset, tmp_path, monkeypatch):
    """Done-when 1 (the reproduce line run from another folder): a study started with relative data paths;
    the header's command, run in the tuning folder, finds the corpora and the backbone and trains."""
    from cardioner.tuning import write_study_outputs

    work = tmp_path / "work"
    work.mkdir()
    for name in ("train", "dev"):
        shutil.copy(ncbi_subset[name], work / f"{name}.conll")
    shutil.copytree(ncbi_subset["model"], work / "bert")
    monkeypatch.chdir(work)
    raw = base_config({"train": Path("train.conll"), "dev": Path("dev.conll"), "model": Path("bert")},
                      epochs=1, max_steps=2)
    base = load_config(write_config(work / "base.yaml", raw))
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2)
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"training.lr": 1e-3}, distributions={"training.lr": lr},
                                              value=0.5, user_attrs={"config": base.to_dict()}))
    write_study_outputs(study, base, Path("tuning"))

    monkeypatch.chdir(work / "tuning")
    header = (work / "tuning" / "best_config.yaml").read_text(encoding="utf-8").splitlines()[1]
    command = header.split(": ", 1)[1].split()
    assert command[:3] == ["cardioner", "train", "--config"] and Path(command[3]).is_absolute()
    result = CliRunner().invoke(app, command[1:])
    assert result.exit_code == 0, result.output
    assert (work / "tuning" / "best_model" / "config.json").is_file()


def test_best_config_keeps_hub_names_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    from cardioner.config import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bert").mkdir()
    config = Config().replace(**{"data.train": "train.conll", "training.output": "out"})
    assert absolute_paths(config).data.train == str(tmp_path / "train.conll")
    assert absolute_paths(config).training.output == str(tmp_path / "out")
    assert absolute_paths(config).model.model == "default"  # a name, not a folder here
    assert absolute_paths(config.replace(**{"model.model": "bert"})).model.model == str(tmp_path / "bert")


@pytest.mark.slow
def test_a_real_sigint_during_a_trial_is_one_line_and_exit_130(ncbi_subset, tmp_path):
    """The same as the first test with a real process and a real SIGINT in the middle of training."""
    config = write_config(tmp_path / "base.yaml", base_config(ncbi_subset, epochs=30))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cardioner", "tune", "--config", str(config), "--trials", "4", "--storage",
         storage, "--output", str(tmp_path / "out")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell ignores it
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        try:
            if optuna.load_study(study_name="cardioner", storage=storage).trials:
                break
        except KeyError:  # not created yet
            continue
    time.sleep(3)  # in the middle of the first trial's epochs
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "failed with" not in stderr, stderr  # Optuna's two lines about the interrupted trial
    assert stderr.strip().splitlines()[-1].startswith("interrupted: ")
    assert "rerun the same command to go on to 4 finished trials" in stderr
