"""Training end to end through the CLI: kill/resume reproduces an
uninterrupted run exactly (issue 4, Done-when 4).

A tiny BERT on a few dozen NCBI-disease sentences (tests/ncbi_subset.py), CPU, one seed. The interrupted run
is a real ``cardioner train`` process killed with SIGKILL once a mid-epoch checkpoint exists; the restarted
run uses ``--resume``. Both must end with exactly the same history (losses, learning rates, dev scores per
epoch), dev and test metrics and weights as the run left alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from ncbi_subset import base_config, write_subset
from safetensors.torch import load_file
from tiny import annotated_documents

from cardioner.config import config_from_dict
from cardioner.data import CorpusError, write_brat
from cardioner.training.run import read_split

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def subset(shared_data, tmp_path_factory) -> dict[str, Path]:
    return write_subset(shared_data, tmp_path_factory.mktemp("ncbi"))


def cardioner_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "cardioner", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def checkpoints(output: Path) -> list[tuple[int, int, int]]:
    """(global_step, epochs done, step in epoch) of each complete
    checkpoint of the run exporting to ``output``."""
    folder = output.parent / (output.name + ".checkpoints")
    found = []
    for path in folder.glob("step_*"):
        if path.is_dir() and not path.name.endswith(".tmp"):
            _, step, epoch, in_epoch = path.name.split("_")
            found.append((int(step), int(epoch), int(in_epoch)))
    return sorted(found)


def comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def test_killed_run_resumes_to_exactly_the_uninterrupted_result(subset, tmp_path):
    config = base_config(subset, epochs=3, checkpoint_steps=2, patience=0)
    config["data"]["test"] = str(subset["dev"])
    config["model"]["use_crf"] = True
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"

    finish(cardioner_process("train", "--config", str(config_path), "--output", str(whole)))

    process = cardioner_process("train", "--config", str(config_path), "--output", str(resumed))
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if any(epoch >= 1 and in_epoch > 0 for _, epoch, in_epoch in checkpoints(resumed)):
            # mid-epoch 2: sampler epoch, skipped batches and RNG all matter
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-epoch"
    assert not (resumed / "metrics.json").exists()
    killed_at = checkpoints(resumed)[-1]

    output = finish(
        cardioner_process("train", "--config", str(config_path), "--output", str(resumed), "--resume")
    )
    assert "resumed from" in output and f"step {killed_at[0]}" in output, output[-2000:]

    expected = json.loads((whole / "metrics.json").read_text())
    got = json.loads((resumed / "metrics.json").read_text())
    assert got["dev"] == expected["dev"] and got["test"] == expected["test"]
    assert got["best_epoch"] == expected["best_epoch"]
    assert comparable(json.loads((resumed / "history.json").read_text())) == comparable(
        json.loads((whole / "history.json").read_text()))
    weights, expected_weights = load_file(resumed / "model.safetensors"), load_file(
        whole / "model.safetensors"
    )
    assert weights.keys() == expected_weights.keys()
    assert all((weights[k] == expected_weights[k]).all() for k in weights)
    assert not (tmp_path / "resumed.checkpoints").exists()  # spent once the export is complete


def test_resume_after_the_run_stopped_trains_no_further(subset, tmp_path):
    """Killed after its last checkpoint but before the export:
    --resume exports what the run had, no more steps."""
    import torch

    from cardioner.config import config_from_dict
    from cardioner.training.run import read_split
    from cardioner.training.trainer import ModelTrainer

    raw = base_config(subset, epochs=3, max_steps=3, output=str(tmp_path / "out"))
    config = config_from_dict(raw)
    train, dev = read_split(config.data.train, config, "train"), read_split(config.data.dev, config, "dev")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stopped = ModelTrainer(config).train(train, dev)  # no save(): the checkpoints stay, as after a kill
        resumed = ModelTrainer(config.replace(**{"training.resume": True})).train(train, dev)
    finally:
        torch.set_num_threads(threads)
    assert (
        [row["global_step"] for row in resumed.history]
        == [row["global_step"] for row in stopped.history]
        == [3]
    )
    assert comparable(resumed.history) == comparable(stopped.history)
    assert resumed.dev_metrics == stopped.dev_metrics
    fitted = stopped.confidence_temperature  # fitted on dev after training (model.confidence_calibration)
    assert fitted is not None and fitted["nll_after"] <= fitted["nll_before"]
    assert resumed.confidence_temperature == fitted


# ----------------------------------------------------------------------- small runs on a tiny BERT, in memory
SENTENCES = [
    (
        "The patient was admitted with acute myocardial infarction and chest pain.",
        ["acute myocardial infarction", "chest pain"],
        "DIS",
    ),
    (
        "Aspirin 100 mg daily was started; heparin was stopped (bleeding risk).",
        ["Aspirin", "heparin"],
        "DRUG",
    ),
    (
        "No history of diabetes mellitus, hypertension or heart failure.",
        ["diabetes mellitus", "hypertension", "heart failure"],
        "DIS",
    ),
]


def tiny_documents(n: int) -> list:
    from cardioner.data.document import Document, Span

    docs = []
    for index in range(n):
        text, mentions, label = SENTENCES[index % len(SENTENCES)]
        docs.append(
            Document(
                f"d{index}", text, [Span(text.index(m), text.index(m) + len(m), label) for m in mentions]
            )
        )
    return docs


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    from tiny import tiny_backbone

    return tiny_backbone("bert", tmp_path_factory.mktemp("backbones"))


def tiny_config(backbone: Path, **overrides):
    from cardioner.config import load_config

    return load_config(None, {"model.model": str(backbone), "data.max_length": 32, "training.batch_size": 4,
                              "training.lr": 1e-3, "training.patience": 0, "training.epochs": 2, **overrides})


def test_a_new_run_clears_old_checkpoints_and_resume_refuses_other_settings(tiny_bert, tmp_path, one_thread):
    from cardioner.training.trainer import ModelTrainer

    output = tmp_path / "out"
    docs, dev = tiny_documents(12), tiny_documents(3)
    old = tiny_config(tiny_bert, **{"training.output": str(output), "training.epochs": 3})
    ModelTrainer(old).train(docs, dev)  # no save(): its checkpoints stay, as after a crash
    assert checkpoints(output)[-1] == (9, 3, 0)

    class Killed(Exception):
        pass

    def kill(row: dict) -> None:
        raise Killed()

    new = tiny_config(tiny_bert, **{"training.output": str(output), "training.lr": 5e-4})
    with pytest.raises(Killed):
        ModelTrainer(new, on_epoch_end=kill).train(docs, dev)  # a new run, killed after its first epoch
    # the old run's checkpoints are gone, not pruned in among the new
    assert checkpoints(output) == [(3, 1, 0)]

    resumed = ModelTrainer(new.replace(**{"training.resume": True})).train(docs, dev)
    assert [(row["epoch"], row["global_step"]) for row in resumed.history] == [(1, 3), (2, 6)]

    with pytest.raises(ValueError, match=r"other settings \(training.lr 0.0005 -> 0.001\)"):
        ModelTrainer(old.replace(**{"training.resume": True, "training.epochs": 2})).train(docs, dev)


def test_every_epoch_has_its_own_batch_order(tiny_bert, monkeypatch, one_thread):
    """The trainer sets the sampler's epoch itself (under several processes each process shards the
    sampler's batches, and Accelerate's loader never reaches our sampler)."""
    from cardioner.training import trainer as trainer_module

    epochs: list[int] = []

    class RecordingSampler(trainer_module.LengthGroupedBatchSampler):
        def batches(self) -> list[list[int]]:
            epochs.append(self.epoch)
            return super().batches()

    monkeypatch.setattr(trainer_module, "LengthGroupedBatchSampler", RecordingSampler)
    trainer_module.ModelTrainer(tiny_config(tiny_bert, **{"training.epochs": 3})).train(tiny_documents(16))
    assert epochs == [0, 1, 2]


def test_empty_documents_are_left_out_of_training_and_every_epoch_loss_is_a_number(
    tiny_bert, caplog, one_thread
):
    from cardioner.data.document import Document
    from cardioner.training.trainer import ModelTrainer

    docs = [*tiny_documents(3), Document("empty", ""), Document("blank", " \n ")]
    config = tiny_config(tiny_bert, **{"training.batch_size": 1, "training.epochs": 3, "training.lr": 3e-3})
    with caplog.at_level("INFO", logger="cardioner"):
        result = ModelTrainer(config).train(docs)
    assert "train: 2 windows without any word left out of training" in caplog.text
    losses = [row["train_loss"] for row in result.history]
    assert all(loss == loss and loss > 0 for loss in losses), losses  # no NaN, no batch of nothing (loss 0)
    assert result.best_epoch == 1 + losses.index(min(losses))  # no dev: the lowest training loss is chosen


def test_a_nan_score_never_counts_as_an_improvement():
    from cardioner.training.trainer import _improved

    nan = float("nan")
    assert not _improved(nan, None, 0.0) and not _improved(nan, -1.0, 0.0)
    assert _improved(-0.5, None, 0.0) and _improved(-0.5, -0.7, 0.1) and not _improved(-0.65, -0.7, 0.1)


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlmr"])
def test_the_default_window_is_the_backbone_limit_and_a_longer_one_is_refused(kind, tmp_path, one_thread):
    """The tiny tokenizers say nothing of a limit (model_max_length 1e30); the backbones take 128 subwords
    (RoBERTa and XLM-R: 130 position embeddings, the first two never used)."""
    from tiny import tiny_backbone

    from cardioner.config import load_config
    from cardioner.training.build import fresh_predictor

    backbone = tiny_backbone(kind, tmp_path)
    text = " ".join(sentence for sentence, _, _ in SENTENCES * 8)
    docs = [*tiny_documents(3), tiny_documents(1)[0].__class__("long", text)]
    predictor, corpora = fresh_predictor(load_config(None, {"model.model": str(backbone)}), docs)
    assert predictor.tokenizer.model_max_length > 10**9 and predictor.encoder.max_length == 128
    assert predictor.encoder.stride == 32  # the default stride: a quarter of the window
    windows = corpora.train.windows
    assert max(len(window["input_ids"]) for window in windows) == 128
    model = predictor.model
    with torch.no_grad():  # a full window runs through the backbone's position embeddings
        model(**predictor.collate([max(windows, key=lambda window: len(window["input_ids"]))]))
    with pytest.raises(
        ValueError, match=f"max_length 129 .* more than the 128 subwords the backbone {backbone} takes"
    ):
        fresh_predictor(load_config(None, {"model.model": str(backbone), "data.max_length": 129}), docs)


def test_a_checkpoint_of_the_old_loop_state_loads_into_the_typed_state():
    """trainer_state.json written before TrainState existed (an untyped dict; no "stopped" keys before the
    first epoch ended) resumes with the missing fields at their defaults; the run settings are not state."""
    from cardioner.training.checkpoints import TrainState

    saved = {
        "epoch": 1,
        "step_in_epoch": 4,
        "global_step": 7,
        "history": [{"epoch": 1}],
        "best_score": 0.5,
        "best_epoch": 1,
        "bad_epochs": 0,
        "train_seconds": 3.5,
        "train_windows_seen": 56,
        "epoch_loss_sum": 2.0,
        "epoch_loss_count": 4,
        "config_sha256": "abc",
        "config": {"training.lr": 1},
    }
    state = TrainState.from_dict(saved)
    assert (state.epoch, state.step_in_epoch, state.global_step, state.best_epoch) == (1, 4, 7, 1)
    assert state.epoch_loss == 0.5 and state.stopped is False and state.stopped_early is False
    state.add_batch(windows=8, loss=1.0)
    assert (state.step_in_epoch, state.train_windows_seen, state.epoch_loss) == (5, 64, 0.6)
    state.next_epoch()
    assert (state.epoch, state.step_in_epoch, state.epoch_loss_count, state.epoch_loss) == (2, 0, 0, 0.0)


def test_bf16_training_is_refused_where_the_device_would_emulate_it(tiny_bert, monkeypatch, one_thread):
    from cardioner import precision
    from cardioner.errors import ConfigError
    from cardioner.training.trainer import ModelTrainer

    monkeypatch.setattr(precision, "native_bf16",
                        lambda device, cpuinfo=None: (False, "CPU without avx512_bf16"))
    config = tiny_config(tiny_bert, **{"training.mixed_precision": "bf16", "training.epochs": 1})
    with pytest.raises(ConfigError, match="training.mixed_precision=bf16 needs native bf16"):
        ModelTrainer(config).train(tiny_documents(4))


def test_overlapping_training_spans_of_a_flat_task_are_refused_naming_the_file_and_line(tmp_path):
    write_brat(annotated_documents(), tmp_path / "corpus")  # d0: ANAT 'myocardial' inside a DISO span
    config = config_from_dict({"data": {"train": str(tmp_path / "corpus")}})
    with pytest.raises(CorpusError, match=r"corpus/d0\.ann:2: document 'd0': overlapping spans 30-57 DISO"):
        read_split(config.data.train, config, "train")  # the message named the document only
    for allowed in ({"multilabel": True}, {"overlaps": "longest"}):
        config = config_from_dict({"data": {"train": str(tmp_path / "corpus"), **allowed}})
        assert len(read_split(config.data.train, config, "train")) == 8
