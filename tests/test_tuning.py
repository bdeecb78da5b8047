"""cardioner tune: search spaces, pruning, outputs, reproduction, kill/resume and shared studies, PBT.

All studies run on a few dozen NCBI-disease sentences with a tiny BERT (hidden 32), 3 epochs each.
"""

from __future__ import annotations

import csv
import os
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
from cardioner.config import ConfigError, load_config
from cardioner.tuning import default_search_space, load_tuning_config, parse_search_space, tune

optuna = pytest.importorskip("optuna")
REPO = Path(__file__).resolve().parents[1]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)




pytestmark = pytest.mark.usefixtures("one_thread")



def write_config(path: Path, config: dict, search: dict | None = None) -> Path:
    path.write_text(
        yaml.safe_dump({**config, **({"search": search} if search else {})}, sort_keys=False),
        encoding="utf-8",
    )
    return path


def cardioner_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cardioner", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# ------------------------------------------------------------------------------------------- search spaces
def test_search_section_maps_onto_dotted_config_keys(tmp_path):
    path = write_config(tmp_path / "base.yaml", {"model": {"head": "mlp"}, "training": {"epochs": 2}}, {
        "lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "training.batch_size": [8, 16],
        "model.classifier_hidden_layers": {"choices": [[256], [512, 256]], "when": {"model.head": "mlp"}},
    })
    config, space = load_tuning_config(path)
    assert config.training.epochs == 2 and config.model.head == "mlp"
    assert [p.key for p in space] == ["training.lr", "training.batch_size", "model.classifier_hidden_layers"]
    assert space[0].log and space[1].choices == (8, 16) and space[2].choices == ("256", "512,256")
    trial = optuna.trial.FixedTrial({"training.lr": 3e-4, "training.batch_size": 16,
                                     "model.classifier_hidden_layers": "512,256"})
    from cardioner.tuning import sample_config

    sampled = sample_config(trial, space, config)
    assert (sampled.training.lr, sampled.training.batch_size) == (3e-4, 16)
    assert sampled.model.classifier_hidden_layers == (512, 256)
    linear = sample_config(optuna.trial.FixedTrial({"training.lr": 1e-4, "training.batch_size": 8}), space,
                           config.replace(**{"model.head": "linear"}))
    assert linear.model.classifier_hidden_layers == config.model.classifier_hidden_layers  # condition not met


def test_search_space_errors_name_the_key():
    with pytest.raises(ConfigError, match="did you mean 'training.lr'"):
        parse_search_space({"learning_rate": [1e-5]})
    with pytest.raises(ConfigError, match="needs numeric low and high"):
        parse_search_space({"training.lr": {"type": "float", "low": 1e-5}})
    with pytest.raises(ConfigError, match="log needs low > 0"):
        parse_search_space({"training.weight_decay": {"type": "float", "low": 0, "high": 0.1, "log": True}})


def test_default_space_depends_on_the_head():
    from cardioner.config import Config

    linear = {p.key for p in default_search_space(Config())}
    mlp = {p.key for p in default_search_space(Config().replace(**{"model.head": "mlp"}))}
    assert {"training.lr", "training.head_lr", "training.weight_decay", "model.classifier_dropout",
            "training.warmup_ratio", "training.batch_size", "model.use_crf"} <= linear
    assert mlp - linear == {"model.classifier_hidden_layers", "model.classifier_activation"}


# ------------------------------------------------------------------------------------------- Optuna studies
def test_study_prunes_writes_outputs_and_best_config_reproduces(ncbi_subset, tmp_path):
    """Done-when 1 (in one process): 6 trials, a deliberately bad region (lr 1e-9) gets pruned; outputs;
    ``cardioner train --config best_config.yaml`` retrains to the best trial's dev score."""
    raw = base_config(ncbi_subset)
    # Per-word argmax: at three epochs on 60 sentences every trial scores dev F1 0.0 under constrained
    # decoding (the tags these toy models get right do not yet form valid B-I paths), and the pruner would see
    # only ties.
    raw["model"]["constrained_decoding"] = False
    path = write_config(tmp_path / "base.yaml", raw, {"training.lr": [1e-9, 3e-3, 1e-2]})
    config, space = load_tuning_config(path)
    output = tmp_path / "tuning"
    study = tune(config, 6, search_space=space, output_dir=output, pruner="median")
    states = [t.state for t in study.trials]
    assert len(states) == 6 and all(s in FINISHED for s in states)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.params, t.intermediate_values) for t in study.trials]
    # The bad region is cut short: some lr 1e-9 trial stops before its last epoch (a good trial may also be
    # pruned by the median rule when it trails, which is the pruner working, not an error).
    assert any(
        t.params["training.lr"] == 1e-9 and t.last_step is not None and t.last_step < 2 for t in pruned
    ), [(t.params, t.intermediate_values, t.state.name) for t in study.trials]

    with (output / "trials.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["number"]) for r in rows] == list(range(6)) and "training.lr" in rows[0]
    assert {"PRUNED", "COMPLETE"} <= {r["state"] for r in rows}
    for name in ("optimization_history.png", "param_importances.png", "intermediate_values.png"):
        assert (output / name).stat().st_size > 1000, name

    best_path = output / "best_config.yaml"
    best = load_config(best_path)  # a complete, plain training config (no search section)
    assert best.training.lr == study.best_params["training.lr"] and best.training.seed == 7
    assert best.training.output == str(output / "best_model")
    result = CliRunner().invoke(app, ["train", "--config", str(best_path)])  # the file exactly as written
    assert result.exit_code == 0, result.output
    summary = yaml.safe_load(result.output[result.output.index("{"):])
    assert summary["dev_f1"] == pytest.approx(study.best_value, abs=1e-9)
    assert (output / "best_model" / "config.json").exists()


def test_importance_plot_is_skipped_with_one_complete_trial(ncbi_subset, tmp_path):
    config, _ = load_tuning_config(write_config(tmp_path / "base.yaml", base_config(ncbi_subset, epochs=1)))
    space = parse_search_space({"training.lr": [1e-3]})
    tune(config, 1, search_space=space, output_dir=tmp_path / "out")
    assert (tmp_path / "out" / "best_config.yaml").exists()
    assert (tmp_path / "out" / "optimization_history.png").exists()
    assert not (tmp_path / "out" / "param_importances.png").exists()


def test_tune_maximises_the_metric_of_the_config_unless_told_otherwise(ncbi_subset, tmp_path, monkeypatch):
    from cardioner.training import batch_size

    dev_scores: list[dict] = []
    train = batch_size.train_with_batch_fallback

    def recording(*args, **kwargs):
        trainer, result = train(*args, **kwargs)
        dev_scores.append(result.dev_metrics)
        return trainer, result

    monkeypatch.setattr(batch_size, "train_with_batch_fallback", recording)
    path = write_config(tmp_path / "base.yaml", base_config(ncbi_subset, epochs=1, metric="recall"),
                        {"training.lr": [3e-3]})
    result = CliRunner().invoke(
        app, ["tune", "--config", str(path), "--trials", "1", "--output", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    summary = yaml.safe_load(result.output[result.output.index("{"):])
    assert summary["best_dev_score"] == dev_scores[0]["micro"]["recall"]
    assert load_config(tmp_path / "out" / "best_config.yaml").training.metric == "recall"
    assert (
        (tmp_path / "out" / "best_config.yaml")
        .read_text()
        .startswith("# best trial 0 of study 'cardioner': dev recall")
    )


def test_study_outputs_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from cardioner.config import Config
    from cardioner.tuning import write_study_outputs

    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2)
    study = optuna.create_study(direction="maximize")

    def add_trial(value: float) -> None:
        config = Config().replace(**{"training.lr": value / 100})
        study.add_trial(
            optuna.trial.create_trial(
                params={"training.lr": value / 100},
                distributions={"training.lr": lr},
                value=value,
                user_attrs={"config": config.to_dict()},
            )
        )

    add_trial(0.5)
    write_study_outputs(study, Config(), tmp_path)
    before = {name: (tmp_path / name).read_text() for name in ("trials.csv", "best_config.yaml")}
    add_trial(0.7)

    class FullDisk:
        def __init__(self, handle):
            self.rows = 0

        def writerow(self, row):
            self.rows += 1
            if self.rows > 2:
                raise OSError("disk full")

    monkeypatch.setattr("cardioner.tuning.optuna_study.csv.writer", FullDisk)
    with pytest.raises(OSError, match="disk full"):  # in the middle of trials.csv
        write_study_outputs(study, Config(), tmp_path)
    assert (tmp_path / "trials.csv").read_text() == before["trials.csv"]
    monkeypatch.undo()
    monkeypatch.setattr(Config, "to_yaml", lambda self: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # in the middle of best_config.yaml
        write_study_outputs(study, Config(), tmp_path)
    assert (tmp_path / "best_config.yaml").read_text() == before["best_config.yaml"]
    # written whole this time: both trials
    assert len((tmp_path / "trials.csv").read_text().splitlines()) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hyperband_pruner_runs_over_epochs(ncbi_subset, tmp_path):
    config, _ = load_tuning_config(write_config(tmp_path / "base.yaml", base_config(ncbi_subset)))
    study = tune(config, 3, search_space=parse_search_space({"training.lr": [1e-9, 1e-3]}),
                 output_dir=tmp_path / "out", pruner="hyperband")
    assert isinstance(study.pruner, optuna.pruners.HyperbandPruner)
    assert len([t for t in study.trials if t.state in FINISHED]) == 3
    with pytest.raises(ValueError, match="pruner must be one of median, hyperband, none, got 'asha'"):
        tune(config, 1, search_space=parse_search_space({"training.lr": [1e-3]}), output_dir=tmp_path / "x",
             pruner="asha")


def test_folds_score_trials_on_mean_dev_f1_only(ncbi_subset, tmp_path):
    """tune --folds: a trial's value is its mean dev score over the folds (test folds are only reported)."""
    config, _ = load_tuning_config(write_config(tmp_path / "base.yaml", base_config(ncbi_subset, epochs=1)))
    study = tune(config, 2, search_space=parse_search_space({"training.lr": [1e-3, 3e-3]}),
                 output_dir=tmp_path / "out", folds=2, pruner="none")
    for trial in study.trials:
        assert set(trial.intermediate_values) == {0, 1}  # one report per fold x epoch
        assert trial.value == pytest.approx(sum(trial.intermediate_values.values()) / 2)
        assert "cv_test_mean_f1" in trial.user_attrs


def test_killed_study_resumes_from_sqlite_without_repeating_trials(ncbi_subset, tmp_path):
    """Done-when 1: SIGKILL a ``cardioner tune`` process after 2
    finished trials, rerun it: the study goes on."""
    search = {"training.lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True},
              "model.classifier_dropout": {"type": "float", "low": 0.0, "high": 0.3}}
    config = write_config(tmp_path / "base.yaml", base_config(ncbi_subset), search)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["tune", "--config", str(config), "--trials", "6", "--storage", storage, "--study-name", "resume",
            "--output", str(tmp_path / "out")]
    process = cardioner_process(*args)
    deadline = time.monotonic() + 240
    before: list = []
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            study = optuna.load_study(study_name="resume", storage=storage)
        except KeyError:  # not created yet
            continue
        before = study.get_trials(states=FINISHED)
        if len(before) >= 2:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = optuna.load_study(study_name="resume", storage=storage).get_trials(states=FINISHED)
    assert 2 <= len(before) < 6, "the study was not interrupted mid-way"

    rerun = cardioner_process(*args)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output
    trials = optuna.load_study(study_name="resume", storage=storage).trials
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 6
    after = {t.number: t for t in finished}
    for trial in before:  # finished trials are kept as they were, never run again
        assert after[trial.number].params == trial.params and after[trial.number].value == trial.value
        assert after[trial.number].datetime_complete == trial.datetime_complete
    new = [t for t in finished if t.number not in {b.number for b in before}]
    assert len(new) == 6 - len(before) and min(t.number for t in new) > max(b.number for b in before)
    assert (tmp_path / "out" / "best_config.yaml").exists()


def test_two_workers_share_one_sqlite_study(ncbi_subset, tmp_path):
    """Done-when 2: two processes on one SQLite study split its trials; no trial runs twice."""
    search = {"training.lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True}}
    config = write_config(tmp_path / "base.yaml", base_config(ncbi_subset, epochs=2), search)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [
        cardioner_process(
            "tune",
            "--config",
            str(config),
            "--trials",
            "6",
            "--storage",
            storage,
            "--study-name",
            "shared",
            "--output",
            str(tmp_path / f"out{i}"),
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[-3000:] for o in outputs]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    finished = [t for t in trials if t.state in FINISHED]
    assert 6 <= len(finished) <= 7  # a worker may start one trial while the other finishes the 6th
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.params["training.lr"] for t in finished}) == len(finished)  # no point sampled twice
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers ran trials


# ------------------------------------------------------------------------------------------- PBT
def test_pbt_without_ray_says_so_in_one_sentence(ncbi_subset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    config = write_config(tmp_path / "base.yaml", base_config(ncbi_subset))
    result = CliRunner().invoke(app, ["tune", "--config", str(config), "--trials", "4", "--method", "pbt",
                                      "--output", str(tmp_path / "pbt")])
    assert result.exit_code == 1
    message = result.output.strip()
    assert message.startswith("error: --method pbt: population-based training needs Ray Tune")
    assert "pip install 'cardioner[ray]'" in message
    assert len(message.splitlines()) == 1


@pytest.mark.slow
def test_pbt_population_of_4_exploits_and_exports_its_best_member(ncbi_subset, tmp_path):
    """Done-when 3: PBT (population 4) under Ray on this machine,
    exploit/explore logged, best member exported."""
    pytest.importorskip("ray.tune")
    from cardioner.export import load_model
    from cardioner.tuning import tune_pbt

    config, _ = load_tuning_config(write_config(tmp_path / "base.yaml", base_config(ncbi_subset, epochs=4)))
    result = tune_pbt(config, population=4, output_dir=tmp_path / "pbt", num_cpus=2)
    assert result["events"], "no exploit/explore event logged"
    assert (tmp_path / "pbt" / "pbt_events.txt").read_text(encoding="utf-8").count("exploit:") == len(
        result["events"]
    )
    assert len(result["members"]) == 4
    model_dir = result["model_dir"]
    assert (model_dir / "config.json").exists() and (model_dir / "training_config.yaml").exists()
    model, _ = load_model(model_dir)
    assert model.config.num_labels == 3
    assert load_config(tmp_path / "pbt" / "best_config.yaml").training.lr == result["best_config"].training.lr


# ------------------------------------------------------------------------------------------- review fixes
def test_default_space_leaves_out_the_crf_where_the_config_rules_it_out_or_fixes_it():
    from cardioner.config import Config

    focal = {p.key for p in default_search_space(Config().replace(**{"model.focal_gamma": 2.0}))}
    smoothing = {p.key for p in default_search_space(Config().replace(**{"model.label_smoothing": 0.1}))}
    assert "model.use_crf" not in focal | smoothing and "training.crf_lr" not in focal | smoothing
    crf = default_search_space(Config().replace(**{"model.use_crf": True}))
    assert "model.use_crf" not in {p.key for p in crf} and "training.crf_lr" in {p.key for p in crf}
    plain = {p.key for p in default_search_space(Config())}
    assert {"model.use_crf", "training.crf_lr"} <= plain


def test_a_refused_trial_is_a_fail_row_and_the_study_goes_on(ncbi_subset, tmp_path):
    """focal_gamma with a sampled CRF is refused by the model: that trial FAILs, the others finish, and
    trials.csv / best_config.yaml are written."""
    raw = base_config(ncbi_subset, epochs=1)
    raw["model"]["focal_gamma"] = 2.0
    config, _ = load_tuning_config(write_config(tmp_path / "base.yaml", raw))
    space = parse_search_space({"model.use_crf": [False, True]})
    study = tune(config, 4, search_space=space, output_dir=tmp_path / "out", pruner="none")
    states = {t.number: (t.state.name, t.params["model.use_crf"]) for t in study.trials}
    assert {state for state, crf in states.values() if crf} == {"FAIL"}, states
    assert {state for state, crf in states.values() if not crf} == {"COMPLETE"}, states
    with (tmp_path / "out" / "trials.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(study.trials)
    for row in rows:
        if row["state"] == "FAIL":
            assert row["error"].startswith("ValueError: label_smoothing (0.0) and focal_gamma (2.0)"), row
        else:
            assert row["error"] == ""
    assert load_config(tmp_path / "out" / "best_config.yaml").model.use_crf is False


def test_pbt_keeps_every_checkpoint_exploitation_may_restore(ncbi_subset, monkeypatch, tmp_path):
    """Ray deleted checkpoints a member was about to restore when it kept the 2 best by score per member."""
    pytest.importorskip("ray.tune")
    import ray
    from ray import tune as ray_tune

    from cardioner.tuning import tune_pbt

    built = {}

    class Stop(Exception):
        pass

    class Tuner:
        def __init__(self, trainable, **kwargs):
            built.update(kwargs)
            raise Stop

    monkeypatch.setattr(ray_tune, "Tuner", Tuner)
    monkeypatch.setattr(ray_tune, "with_parameters", lambda trainable, **kwargs: trainable)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # no Ray cluster started for this
    config, _ = load_tuning_config(write_config(tmp_path / "base.yaml", base_config(ncbi_subset)))
    with pytest.raises(Stop):
        tune_pbt(config, population=2, output_dir=tmp_path / "pbt", train_docs=[], dev_docs=[])
    kept = built["run_config"].checkpoint_config
    assert kept.num_to_keep is None and kept.checkpoint_score_attribute is None


def test_pbt_export_tunes_multilabel_thresholds_on_dev(ncbi_subset, tmp_path):
    """The exported PBT member gets dev-tuned thresholds, as `cardioner train` gives its model."""
    import json

    from safetensors.torch import save_model

    from cardioner.data import read_corpus
    from cardioner.training import ModelTrainer
    from cardioner.tuning.pbt import export_member

    raw = base_config(ncbi_subset, epochs=3)
    raw["data"]["multilabel"] = True
    config = load_config(write_config(tmp_path / "base.yaml", raw))
    train, _ = read_corpus(ncbi_subset["train"])
    dev, _ = read_corpus(ncbi_subset["dev"])
    trainer = ModelTrainer(config)
    result = trainer.train(train, dev)
    tuned = trainer.model.config.thresholds
    assert tuned != [0.5], "the toy model must prefer a threshold other than 0.5 for this test to tell"
    save_model(trainer.model, str(tmp_path / "member.safetensors"))
    model_dir, scores = export_member(
        config, tmp_path / "member.safetensors", train, dev, None, tmp_path / "best"
    )
    assert json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["thresholds"] == tuned
    assert scores["dev_score"] == pytest.approx(result.dev_metrics["micro"]["f1"])


def test_when_conditions_read_values_as_the_config_does():
    from cardioner.config import Config
    from cardioner.tuning import sample_config

    space = parse_search_space(
        {
            "model.classifier_hidden_layers": {"choices": [[256], [512, 256]]},
            "model.classifier_activation": {
                "choices": ["relu", "tanh"],
                "when": {"model.classifier_hidden_layers": [512, 256]},
            },
            "training.crf_lr": {
                "type": "float",
                "low": 1e-3,
                "high": 1e-1,
                "log": True,
                "when": {"model.use_crf": "true"},
            },
        }
    )
    assert space[1].when == (("model.classifier_hidden_layers", (512, 256)),)
    assert space[2].when == (("model.use_crf", True),)
    base = Config().replace(**{"model.head": "mlp", "model.use_crf": True})
    values = {"model.classifier_hidden_layers": "512,256", "model.classifier_activation": "tanh",
              "training.crf_lr": 0.05}
    sampled = sample_config(optuna.trial.FixedTrial(values), space, base)
    assert (sampled.model.classifier_activation, sampled.training.crf_lr) == ("tanh", 0.05)
    other = sample_config(optuna.trial.FixedTrial({**values, "model.classifier_hidden_layers": "256"}), space,
                          base.replace(**{"model.use_crf": False}))
    assert other.model.classifier_activation == base.model.classifier_activation
    assert other.training.crf_lr == base.training.crf_lr
    with pytest.raises(ConfigError, match="model.use_crf"):
        parse_search_space({"training.crf_lr": {"type": "float", "low": 1e-3, "high": 1e-1,
                                                "when": {"model.use_crf": "maybe"}}})


def test_pruner_steps_are_fold_and_epoch_and_survive_an_oom_retry(ncbi_subset, tmp_path, monkeypatch):
    """Step = fold x epochs + epoch - 1 (a fold stopped early leaves a gap), and a batch-halving retry reports
    the same steps again instead of shifting them; trials.csv gives the 1-based fold and epoch."""
    import torch

    from cardioner.training import folds as folds_module
    from cardioner.training.trainer import ModelTrainer

    config, _ = load_tuning_config(write_config(tmp_path / "base.yaml", base_config(ncbi_subset, epochs=3)))

    def fake_cross_validate(config, docs, k, on_epoch_end=None):
        rows = []
        for fold, last in ((0, 1), (1, 3)):  # fold 1 stops early after epoch 1
            for epoch in range(1, last + 1):
                on_epoch_end(fold, {"epoch": epoch, "dev_scores": {"micro": {"f1": fold + epoch / 10}}})
            rows.append({"dev_scores": {"micro": {"f1": fold + last / 10}}})
        return {"folds": rows, "mean_f1": 0.0}

    monkeypatch.setattr(folds_module, "cross_validate", fake_cross_validate)
    study = tune(
        config,
        1,
        search_space=parse_search_space({"training.lr": [1e-3]}),
        output_dir=tmp_path / "cv",
        folds=2,
        pruner="none",
        train_docs=[],
        dev_docs=None,
    )
    assert study.trials[0].intermediate_values == {0: 0.1, 3: 1.1, 4: 1.2, 5: 1.3}
    with (tmp_path / "cv" / "trials.csv").open(encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert (row["last_step"], row["last_fold"], row["last_epoch"]) == ("5", "2", "3")
    monkeypatch.undo()

    train = ModelTrainer.train
    attempts = []

    def out_of_memory_in_epoch_2(self, *args, **kwargs):
        attempts.append(self.config.training.batch_size)
        if len(attempts) == 1:
            hook = self.on_epoch_end

            def then_oom(row):
                hook(row)
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            self.on_epoch_end = then_oom
        return train(self, *args, **kwargs)

    monkeypatch.setattr(ModelTrainer, "train", out_of_memory_in_epoch_2)
    study = tune(
        config,
        1,
        search_space=parse_search_space({"training.lr": [3e-3]}),
        output_dir=tmp_path / "oom",
        pruner="none",
    )
    assert attempts == [8, 4]
    assert sorted(study.trials[0].intermediate_values) == [0, 1, 2]  # was {0, 1, 2, 3}: the retry shifted on
    with (tmp_path / "oom" / "trials.csv").open(encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert (row["last_step"], row["last_fold"], row["last_epoch"]) == ("2", "", "3")


def test_best_config_trains_into_the_tuning_output_and_late_exploits_are_marked(tmp_path):
    """README: best_config.yaml's training.output is
    <output>/best_model, even when the base config has one."""
    import json

    from cardioner.config import Config
    from cardioner.tuning import write_study_outputs
    from cardioner.tuning.pbt import pbt_events

    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2)
    study = optuna.create_study(direction="maximize")
    base = Config().replace(**{"training.output": str(tmp_path / "elsewhere")})
    study.add_trial(optuna.trial.create_trial(params={"training.lr": 1e-3}, distributions={"training.lr": lr},
                                              value=0.5, user_attrs={"config": base.to_dict()}))
    write_study_outputs(study, base, tmp_path / "out")
    assert load_config(tmp_path / "out" / "best_config.yaml").training.output == str(
        tmp_path / "out" / "best_model"
    )

    log = tmp_path / "pbt" / "pbt_global.txt"
    log.parent.mkdir()
    log.write_text("\n".join(json.dumps(["0001_a", "0002_b", epoch, epoch, {"training.lr": 1e-3},
                                         {"training.lr": 1.2e-3}]) for epoch in (2, 4)) + "\n")
    early, late = pbt_events(log.parent, epochs=4)
    assert early.endswith("explore: training.lr 0.001 -> 0.0012")
    assert late.endswith(
        "explore: training.lr 0.001 -> 0.0012 (not trained: the donor had finished its epochs)"
    )
