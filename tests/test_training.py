"""Training end to end through the CLI: kill/resume reproduces an uninterrupted run exactly (issue 4, Done-when 4).

A tiny BERT on a few dozen NCBI-disease sentences (tests/ncbi_subset.py), CPU, one seed. The interrupted run is a
real ``cardioner train`` process killed with SIGKILL once a mid-epoch checkpoint exists; the restarted run uses
``--resume``. Both must end with exactly the same history (losses, learning rates, dev scores per epoch), dev
and test metrics and weights as the run left alone.
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
import yaml
from ncbi_subset import base_config, write_subset
from safetensors.torch import load_file

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
    """(global_step, epochs done, step in epoch) of each complete checkpoint of the run exporting to ``output``."""
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
            process.send_signal(signal.SIGKILL)  # mid-epoch 2: sampler epoch, skipped batches and RNG all matter
            break
        time.sleep(0.01)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed mid-epoch"
    assert not (resumed / "metrics.json").exists()
    killed_at = checkpoints(resumed)[-1]

    output = finish(cardioner_process("train", "--config", str(config_path), "--output", str(resumed), "--resume"))
    assert "resumed from" in output and f"step {killed_at[0]}" in output, output[-2000:]

    expected = json.loads((whole / "metrics.json").read_text())
    got = json.loads((resumed / "metrics.json").read_text())
    assert got["dev"] == expected["dev"] and got["test"] == expected["test"]
    assert got["best_epoch"] == expected["best_epoch"]
    assert comparable(json.loads((resumed / "history.json").read_text())) == comparable(
        json.loads((whole / "history.json").read_text()))
    weights, expected_weights = load_file(resumed / "model.safetensors"), load_file(whole / "model.safetensors")
    assert weights.keys() == expected_weights.keys()
    assert all((weights[k] == expected_weights[k]).all() for k in weights)
    assert not (tmp_path / "resumed.checkpoints").exists()  # spent once the export is complete


def test_resume_after_the_run_stopped_trains_no_further(subset, tmp_path):
    """Killed after its last checkpoint but before the export: --resume exports what the run had, no more steps."""
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
    assert [row["global_step"] for row in resumed.history] == [row["global_step"] for row in stopped.history] == [3]
    assert comparable(resumed.history) == comparable(stopped.history)
    assert resumed.dev_metrics == stopped.dev_metrics
