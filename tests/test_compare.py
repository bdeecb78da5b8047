"""cardioner compare: heads trained on the same data, seed
and budget; comparison.json/.md/.png; --compare-only."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from ncbi_subset import base_config, write_subset
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.compare import ALL_HEADS, compare_heads, tabulate_exports
from cardioner.config import CHOICES, load_config
from cardioner.modeling import TOKEN_HEADS

RUNS = ["linear", "linear_crf", "cnn", "cnn_crf"]


@pytest.fixture(scope="module")
def compared(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    paths = write_subset(shared_data, root / "data")
    raw = base_config(paths, epochs=1, max_steps=4)  # the same small budget for every head
    raw["data"]["test"] = str(paths["dev"])
    raw["model"].update(cnn_num_filters=16)
    (root / "base.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(root / "base.yaml")
    return root, compare_heads(config, ["linear", "cnn"], crf="both", output_dir=root / "out")


def test_compare_trains_every_head_and_writes_json_md_png(compared):
    root, comparison = compared
    out = root / "out"
    written = json.loads((out / "comparison.json").read_text())
    assert written == json.loads(json.dumps(comparison))
    assert [row["name"] for row in written["runs"]] == RUNS
    for row in written["runs"]:
        assert row["scored_on"] == "test" and 0.0 <= row["micro_f1"] <= 1.0 and row["macro_f1"] is not None
        assert set(row["per_type_f1"]) == {"Disease"}
        assert row["parameters"] > row["head_parameters"] > 0
        assert row["train_seconds"] > 0 and row["inference_tokens_per_second"] > 0
    table = (out / "comparison.md").read_text().splitlines()
    assert table[0].startswith("| run | head | CRF | layers | F1 Disease | micro F1 | macro F1 | head params")
    assert [line.split(" | ")[0].strip("| ") for line in table[2:6]] == RUNS
    image = matplotlib.image.imread(out / "comparison.png")
    assert image.shape[0] > 400 and image.shape[1] > 1000  # a two-panel figure, 120 dpi
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_comparison_files_are_replaced_whole_or_not_at_all(compared, tmp_path, monkeypatch):
    from cardioner import plots
    from cardioner.compare import write_comparison

    _, comparison = compared
    paths = write_comparison(comparison, tmp_path)
    before = paths["png"].read_bytes()

    def broken_plot(rows, path):
        path.write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(plots, "plot_comparison", broken_plot)
    with pytest.raises(OSError, match="disk full"):
        write_comparison(comparison, tmp_path)
    assert paths["png"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.json", "comparison.md",
                                                          "comparison.png"]


def test_every_run_had_the_same_data_seed_and_budget(compared):
    root, _ = compared
    configs = {
        name: yaml.safe_load((root / "out" / name / "training_config.yaml").read_text()) for name in RUNS
    }
    for name, config in configs.items():
        assert config["model"]["head"] == name.removesuffix("_crf")
        assert config["model"]["use_crf"] == name.endswith("_crf")
        config["model"].pop("head"), config["model"].pop("use_crf"), config["training"].pop("output")
    assert all(config == configs["linear"] for config in configs.values())


def test_compare_only_tabulates_existing_exports(compared):
    root, comparison = compared
    again = tabulate_exports([root / "out"], root / "tabulated")
    assert [row["name"] for row in again["runs"]] == sorted(RUNS)
    by_name = {row["name"]: row for row in comparison["runs"]}
    for row in again["runs"]:
        assert row == by_name[row["name"]]
    assert (root / "tabulated" / "comparison.png").is_file()

    result = CliRunner().invoke(app, ["compare", "--compare-only", str(root / "out" / "cnn"),
                                      str(root / "out" / "linear_crf"), "--output", str(root / "cli")])
    assert result.exit_code == 0, result.output
    assert "| cnn | cnn | no | 1 |" in result.output and "| linear_crf | linear | yes | 1 |" in result.output
    assert len(json.loads((root / "cli" / "comparison.json").read_text())["runs"]) == 2


def test_compare_rejects_unknown_heads_and_crf_settings(tmp_path):
    config = load_config(overrides={"data.train": str(tmp_path)})
    with pytest.raises(ValueError, match=r"unknown heads \['gru'\]"):
        compare_heads(config, ["linear", "gru"], output_dir=tmp_path)
    with pytest.raises(ValueError, match="crf must be one of off, on, both; got 'sometimes'"):
        compare_heads(config, ["linear"], crf="sometimes", output_dir=tmp_path)
    result = CliRunner().invoke(app, ["compare", "--compare-only", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "neither an export folder" in result.output


def test_compare_without_dev_or_test_fails_before_training_anything(shared_data, tmp_path):
    paths = write_subset(shared_data, tmp_path / "data")
    output = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["compare", "--heads", "linear,mlp", "--train", str(paths["train"]), "--model", str(paths["model"]),
         "--output", str(output), "--epochs", "1"],
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        "error: compare scores each head on a test or dev corpus: set --test or --dev "
        "(or data.dev_fraction)"
    )
    assert not output.exists()  # nothing trained, nothing exported


def test_compare_refuses_a_run_folder_that_is_not_an_export_before_training(shared_data, tmp_path):
    paths = write_subset(shared_data, tmp_path / "data")
    (tmp_path / "out" / "mlp").mkdir(parents=True)
    (tmp_path / "out" / "mlp" / "notes.txt").write_text("keep", encoding="utf-8")
    # an earlier comparison's folder
    (tmp_path / "out" / "comparison.json").write_text("{}", encoding="utf-8")
    config = load_config(overrides={"data.train": str(paths["train"]), "data.dev": str(paths["dev"]),
                                    "model.model": str(paths["model"])})
    with pytest.raises(
        ValueError, match="out/mlp: the output is a folder that is neither empty nor a cardioner " "export"
    ):
        compare_heads(config, ["linear", "mlp"], output_dir=tmp_path / "out")
    # no run started
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["comparison.json", "mlp"]


def test_default_heads_are_all_heads():
    assert ALL_HEADS == tuple(TOKEN_HEADS)


def test_systems_per_type_plot(tmp_path):
    from cardioner.plots import plot_systems_per_type

    per_system = {"multi-label": {"ANAT": 40.1, "DISO": 55.0},
                  "flat": {"ANAT": 12.0, "DISO": 57.5, "CHEM": 60.0}}
    path = plot_systems_per_type(per_system, tmp_path / "types.png", ylabel="F1 (%)")
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (540, 816)  # 6.8 x 4.5 inches (3 type groups) at 120 dpi
    assert image[..., :3].std() > 0.05  # something was drawn
    spread = {"multi-label": {"ANAT": 1.5, "DISO": 0.4}, "flat": {"ANAT": 2.0, "DISO": 0.0, "CHEM": 0.9}}
    with_errors = plot_systems_per_type(per_system, tmp_path / "errors.png", ylabel="F1 (%)", errors=spread)
    assert matplotlib.image.imread(with_errors).shape == image.shape
    assert not (matplotlib.image.imread(with_errors) == image).all()  # the error bars were drawn
    with pytest.raises(ValueError, match="no systems"):
        plot_systems_per_type({}, tmp_path / "empty.png")


def test_comparison_plot_has_one_bar_per_run_even_for_one_head(tmp_path, monkeypatch):
    """`compare --compare-only runs/heads models/other_export`: two linear exports are two bars, not one."""
    from cardioner import plots

    drawn = {}

    def keep(fig, path, title):
        drawn["fig"] = fig
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    rows = [{"name": "linear", "head": "linear", "use_crf": False, "micro_f1": 0.61},
            {"name": "other_export", "head": "linear", "use_crf": False, "micro_f1": 0.42},
            {"name": "linear_crf", "head": "linear", "use_crf": True, "micro_f1": 0.55}]
    plots.plot_comparison(rows, tmp_path / "comparison.png")
    bars = drawn["fig"].axes[0]
    heights = sorted((round(patch.get_x() + patch.get_width() / 2), round(patch.get_height(), 2))
                     for patch in bars.patches)
    assert heights == [(0, 0.61), (1, 0.42), (2, 0.55)]
    assert [label.get_text() for label in bars.get_xticklabels()] == ["linear", "other_export", "linear_crf"]


def test_compare_crf_follows_the_config_unless_given_and_crf_is_a_head(tmp_path, monkeypatch):
    """--crf defaults to model.use_crf (from --set or the
    YAML); `--heads linear,mlp,crf` (DESIGN §7) works."""
    from cardioner import compare

    planned = []

    class Planned(Exception):
        pass

    def record(config, outputs=()):
        planned.append([path.name for path in outputs])
        raise Planned

    monkeypatch.setattr(compare, "check_before_reading", record)
    config = load_config(overrides={"data.train": str(tmp_path), "model.use_crf": True})
    for heads, crf, expected in ((["linear"], None, ["linear_crf"]), (["linear"], "off", ["linear"]),
                                 (["linear", "mlp", "crf"], None, ["linear_crf", "mlp_crf"]),
                                 (["linear", "crf"], "both", ["linear", "linear_crf"])):
        with pytest.raises(Planned):
            compare_heads(config, heads, crf=crf, output_dir=tmp_path)
        assert planned.pop() == expected, (heads, crf)
    with pytest.raises(Planned):
        compare_heads(config.replace(**{"model.use_crf": False}), ["mlp", "crf"], output_dir=tmp_path)
    assert planned.pop() == ["mlp", "linear_crf"]

    result = CliRunner().invoke(
        app,
        ["compare", "--heads", "cnn", "--train", str(tmp_path), "--dev", str(tmp_path), "--set",
         "model.use_crf=true", "--output", str(tmp_path / "out")],
    )
    assert isinstance(result.exception, Planned) or "Planned" in result.output, result.output
    assert planned.pop() == ["cnn_crf"]


def test_learning_curves_mark_the_epoch_the_trainer_selected(shared_data, tmp_path, monkeypatch):
    """The dashed line is the trainer's best epoch (training.metric, min_delta), not the top dev micro F1."""
    from cardioner import plots
    from cardioner.data import read_corpus
    from cardioner.training import ModelTrainer

    marked = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, title: marked.append(
        [line.get_xdata()[0] for line in fig.axes[1].lines if line.get_linestyle() == "--"]) or path)
    history = [{"epoch": 1, "train_loss": 1.0, "dev_f1": 0.2}, {"epoch": 2, "train_loss": 0.8, "dev_f1": 0.3},
               {"epoch": 3, "train_loss": 0.6, "dev_f1": 0.5}]
    plots.plot_learning_curves(history, tmp_path / "a.png", best_epoch=2)
    plots.plot_learning_curves(history, tmp_path / "b.png")
    assert marked == [[2], [3]]

    passed = []
    drawn = plots.plot_learning_curves
    monkeypatch.setattr(
        plots,
        "plot_learning_curves",
        lambda *args, **kwargs: passed.append(kwargs.get("best_epoch")) or drawn(*args, **kwargs),
    )
    paths = write_subset(shared_data, tmp_path / "data")
    raw = base_config(paths, epochs=3, lr=3e-3, min_delta=0.5)  # no later epoch beats the first by 0.5
    config = load_config(overrides={f"{s}.{k}": v for s, values in raw.items() for k, v in values.items()})
    trainer = ModelTrainer(config)
    result = trainer.train(read_corpus(paths["train"])[0], read_corpus(paths["dev"])[0])
    trainer.save(tmp_path / "export")
    assert result.best_epoch == 1 and passed == [1]
    assert json.loads((tmp_path / "export" / "metrics.json").read_text())["best_epoch"] == 1


def test_run_names_are_python_identifiers_that_transformers_imports_unchanged():
    """Issue 21: ``linear+crf`` made transformers warn three times ("not a valid Python identifier") on every
    load of that export: it imports an export's modeling.py under the folder's name."""
    from transformers.dynamic_module_utils import _sanitize_module_name

    from cardioner.compare import run_name

    names = [run_name(head, use_crf) for head in CHOICES["model.head"] for use_crf in (False, True)]
    assert all(name.isidentifier() for name in names), names
    assert [_sanitize_module_name(name) for name in names] == names


def test_ctrl_c_in_compare_names_the_finished_runs_and_how_to_tabulate_them(tmp_path, monkeypatch):
    """Issue 21: Ctrl-C ends compare with one line (exit 130): the runs that finished and --compare-only."""
    import cardioner.compare

    def interrupted(config, heads, crf, output):
        (Path(output) / "linear").mkdir(parents=True)
        (Path(output) / "linear" / "metrics.json").write_text("{}", encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(cardioner.compare, "compare_heads", interrupted)
    output = tmp_path / "comparison"
    result = CliRunner().invoke(app, ["compare", "--heads", "linear,mlp", "--output", str(output)])
    assert result.exit_code == 130
    assert result.stderr.strip() == (
        "interrupted: the comparison table was not written; the finished runs are kept as exports in "
        f"{output} (linear): cardioner compare --compare-only {output} --output {output}.table tabulates "
        "them (a rerun trains every head again)")
