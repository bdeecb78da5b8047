"""``cardioner train`` as a newcomer meets it (issue 21): help that tells defaults and choices, no model
thrown away for want of ``--output``, ``--set`` keys that name their section, Ctrl-C that says what was
kept."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.config import CHOICES, default_of
from cardioner.modeling import HEAD_SETTINGS


def invoke(*args: str, columns: int = 300):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns), "NO_COLOR": "1"})


def help_lines(command: str) -> dict[str, str]:
    """{flag: its help text on one line} from ``cardioner COMMAND --help`` on a wide terminal."""
    output = invoke(command, "--help").output
    lines: dict[str, str] = {}
    for line in output.splitlines():
        # the flag, its other name (-v, --no-crf), its metavar (N, PATH; none for a flag), its help
        match = re.match(r"[│|]\s+(--[\w-]+)\s+(?:(?:-\w|--[\w-]+)\s+)?(?:[A-Z][A-Z0-9_=/]*\s{2,})?"
                         r"(.*?)\s*[│|]?$", line)
        if match:
            lines[match.group(1)] = match.group(2)
    return lines


def test_train_help_tells_every_default_and_choice_from_the_config():
    """Done-when 1 (help text): defaults for epochs, batch size, lr, head; choices listed; the head's and the
    CRF's learning rates; --verbose described; all read from the config's fields, never typed twice."""
    lines = help_lines("train")
    for flag, key in (("--epochs", "training.epochs"), ("--batch-size", "training.batch_size"),
                      ("--lr", "training.lr"), ("--seed", "training.seed"), ("--head", "model.head")):
        assert f"(default: {default_of(key)}; {key})" in lines[flag], (flag, lines[flag])
    assert " | ".join(HEAD_SETTINGS["head"].choices) in lines["--head"]
    assert " | ".join(CHOICES["training.log_with"]) in lines["--log-with"]
    assert "(default: off; model.use_crf)" in lines["--crf"]
    assert "10x" in lines["--lr"] and "100x" in lines["--lr"]
    assert "debug" in lines["--verbose"] and "CARDIONER_DEBUG" in lines["--verbose"]
    assert "dev_fraction" in lines["--folds"]
    assert "--no-export" in lines["--output"]
    assert all(text for text in lines.values()), [flag for flag, text in lines.items() if not text]


def test_train_help_follows_the_config_when_a_default_changes(monkeypatch):
    from cardioner.cli import options

    monkeypatch.setitem(CHOICES, "model.head", ("linear", "mlp"))
    assert options.described("model.head", "token head") == (
        "token head: linear | mlp (default: linear; model.head)")
    assert options.described("data.max_length", "window", default="the backbone's limit").endswith(
        "(default: the backbone's limit; data.max_length)")


def test_train_without_an_output_is_refused_before_anything_runs(monkeypatch, tmp_path):
    """Done-when 1 (the refused output): no model trained and thrown away; --no-export says it on purpose."""
    import cardioner.training

    calls = []
    monkeypatch.setattr(cardioner.training, "run_training",
                        lambda config: calls.append(config) or (None, None))
    corpus = tmp_path / "train.conll"
    corpus.write_text("fever\tB-DISO\n", encoding="utf-8")
    result = invoke("train", "--train", corpus, "--model", "default", "--epochs", "1")
    assert result.exit_code == 2 and not calls
    assert "--output" in result.output and "--no-export" in result.output
    contradiction = invoke("train", "--train", corpus, "--output", tmp_path / "out", "--no-export")
    assert contradiction.exit_code == 2 and not calls and "contradict" in contradiction.output


@pytest.mark.parametrize(("setting", "expected"), [
    ("layer_decay=0.9", "'layer_decay' needs its section: 'training.layer_decay'"),
    ("trainig.lr=0.1", "unknown section 'trainig' in 'trainig.lr'; did you mean 'training.lr'?"),
    ("training.layer_decy=0.9", "did you mean 'training.layer_decay'?"),
])
def test_set_keys_name_their_section_or_are_refused(setting, expected, tmp_path):
    """Done-when 1 (ambiguous --set): a key without its section is a usage error naming the dotted key."""
    result = invoke("train", "--train", tmp_path, "--output", tmp_path / "out", "--set", setting, columns=400)
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split()), result.output


def test_a_misspelled_section_in_a_config_file_suggests_the_section(tmp_path):
    """Done-when 1 (section-name suggestions): ``trainig:`` gets 'training', not 'data.train'."""
    path = tmp_path / "config.yaml"
    path.write_text("trainig:\n  lr: 0.1\n", encoding="utf-8")
    result = invoke("train", "--config", path, "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {path}: unknown section 'trainig'; did you mean 'training'?"


def test_ctrl_c_during_training_says_what_was_kept_and_exits_130(monkeypatch, tmp_path):
    """Done-when 1 (the SIGINT message): one line, exit 130; with a checkpoint on disk it says --resume."""
    import cardioner.training

    def interrupted(config):
        checkpoint = tmp_path / "out.checkpoints" / "step_000011"
        checkpoint.mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(cardioner.training, "run_training", interrupted)
    corpus = tmp_path / "train.conll"
    corpus.write_text("fever\tB-DISO\n", encoding="utf-8")
    result = invoke("train", "--train", corpus, "--output", tmp_path / "out", columns=400)
    assert result.exit_code == 130
    assert result.output.strip() == (
        f"interrupted: {tmp_path / 'out'} was not written; the last checkpoint is kept in "
        f"{tmp_path / 'out.checkpoints'}: rerun the same command with --resume to go on from it")


def tiny_training(ncbi_subset, output) -> list[str]:
    return ["--train", ncbi_subset["train"], "--dev", ncbi_subset["dev"], "--model", ncbi_subset["model"],
            "--output", output, "--epochs", "2", "--max-length", "64", "--batch-size", "16",
            "--set", "training.max_steps=4"]


def test_tensorboard_event_files_survive_the_export(ncbi_subset, tmp_path):
    """Done-when 1 (TensorBoard event files that survive the export): they go to OUTPUT.logs, named in the
    summary; the checkpoint folder the tracker used to write into is removed by the export."""
    pytest.importorskip("tensorboardX", reason="accelerate's TensorBoard tracker needs tensorboard or "
                                               "tensorboardX (the test extra installs tensorboardX)")
    output = tmp_path / "model"
    result = invoke("train", *tiny_training(ncbi_subset, output), "--log-with", "tensorboard")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["logs"] == str(tmp_path / "model.logs")
    events = list((tmp_path / "model.logs").rglob("events.out.tfevents.*"))
    assert events and all(event.stat().st_size > 0 for event in events)
    assert (output / "config.json").is_file() and not (tmp_path / "model.checkpoints").exists()


def test_a_tracker_without_its_package_or_an_output_is_refused_before_training(ncbi_subset, tmp_path,
                                                                               monkeypatch):
    import cardioner.training.trainer as trainer

    monkeypatch.setitem(trainer.TRACKER_PACKAGES, "tensorboard", ("no_such_tensorboard_package",))
    result = invoke("train", *tiny_training(ncbi_subset, tmp_path / "model"), "--log-with", "tensorboard",
                    columns=400)
    assert result.exit_code == 1 and not (tmp_path / "model").exists()
    assert result.stderr.strip() == (
        "error: --log-with=tensorboard needs the no_such_tensorboard_package package, which is not "
        "installed: pip install no_such_tensorboard_package")
    args = tiny_training(ncbi_subset, tmp_path / "model")
    args[args.index("--output"):args.index("--output") + 2] = ["--no-export"]
    result = invoke("train", *args, "--set", "training.log_with=wandb", columns=400)
    assert result.exit_code == 1 and "--log-with=wandb needs --output" in result.stderr


def test_a_bad_option_value_names_the_flag_and_a_bad_file_value_names_the_key(tmp_path):
    """Issue 21 (found looking): ``--head foo`` said "model.head must be ..."; a file's value keeps its
    key."""
    result = invoke("train", "--train", tmp_path, "--output", tmp_path / "out", "--head", "foo", columns=400)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: command line: --head must be one of linear, mlp")
    path = tmp_path / "config.yaml"
    path.write_text("model: {head: foo}\n", encoding="utf-8")
    result = invoke("train", "--config", path, "--output", tmp_path / "out", columns=400)
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {path}: model.head must be one of")
