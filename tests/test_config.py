"""The config: defaults that adapt (stride), explicit None in
replace, null in YAML, suggestions for unknown keys."""

from __future__ import annotations

import pytest

from cardioner.backbone import window_stride
from cardioner.config import ConfigError, config_from_dict, load_config


def test_the_default_stride_follows_the_window_and_an_explicit_one_is_checked():
    for max_length in (16, 32, 64):
        config = load_config(None, {"data.max_length": max_length})  # no stride given: nothing to clash with
        assert config.data.stride is None
        assert window_stride(config.data.stride, max_length) == max_length // 4
    assert window_stride(None, 512) == 128
    assert load_config(None, {"data.max_length": 64, "data.stride": 16}).data.stride == 16
    with pytest.raises(ConfigError, match=r"data.stride \(64\) must be smaller than data.max_length \(64\)"):
        load_config(None, {"data.max_length": 64, "data.stride": 64})


def test_replace_applies_an_explicit_none_and_the_command_line_skips_unset_options():
    config = load_config(None, {"training.output": "out", "training.head_lr": 1e-3, "training.epochs": None})
    assert config.training.epochs == 3  # an option left unset on the command line keeps the default
    cleared = config.replace(**{"training.output": None, "training.head_lr": None})
    assert cleared.training.output is None and cleared.training.head_lr is None
    assert config_from_dict(cleared.to_dict()) == cleared
    with pytest.raises(ConfigError, match="training.epochs cannot be null"):
        config.replace(**{"training.epochs": None})


def test_a_null_in_the_config_file_is_an_error_unless_the_key_takes_none(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("data: {stride: null}\ntraining: {head_lr: null, epochs: null}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{path}: training.epochs cannot be null"):
        load_config(path)
    path.write_text("data: {stride: null}\ntraining: {head_lr: null, epochs: 2}\n", encoding="utf-8")
    config = load_config(path)
    assert (config.data.stride, config.training.head_lr, config.training.epochs) == (None, None, 2)


@pytest.mark.parametrize(("key", "suggestion"), [
    ("training.foo", None), ("foo", None), ("training.lrate", None),
    ("training.epoch", "training.epochs"), ("bach_size", "training.batch_size"), ("model.lr", "training.lr"),
    ("learning_rate", "training.lr"), ("max_len", "data.max_length"),
])
def test_unknown_keys_suggest_only_a_close_match(key, suggestion):
    with pytest.raises(ConfigError) as error:
        load_config(None, {key: "1"})
    message = str(error.value)
    assert message.startswith(f"command line: unknown key {key!r}")
    if suggestion is None:
        assert "did you mean" not in message, message
    else:
        assert message.endswith(f"did you mean {suggestion!r}?"), message


# ------------------------------------------------------------------ issue 15: one validation of every number
@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("training.lr", float("inf"), "training.lr must be a finite number, got inf"),
        ("training.lr", "inf", "training.lr must be a finite number written with ASCII digits, got 'inf'"),
        ("training.lr", "nan", "got 'nan'"),
        ("training.lr", "1e400", "training.lr must be a finite number, got '1e400'"),
        ("training.lr", -1e-3, r"training.lr must be > 0, got -0.001"),
        ("training.head_lr", float("nan"), "training.head_lr must be a finite number"),
        ("training.epochs", 0.9,
         r"training.epochs must be an integer, got 0.9 \(a fraction is never rounded\)"),
        ("training.epochs", True, "training.epochs must be an integer, got the boolean True"),
        ("training.epochs", "1_0", "must be an integer written with ASCII digits, got '1_0'"),
        ("training.epochs", "\u0663", "must be an integer written with ASCII digits"),  # Arabic-Indic 3
        ("training.epochs", "9" * 5000,
         r"must be an integer written with ASCII digits, got '9999.*\(5000 characters\)"),
        ("training.epochs", 10**30, "must lie within"),
        ("training.seed", -1, r"training.seed must be in \[0, 4294967295\], got -1"),
        ("training.max_grad_norm", -1, "training.max_grad_norm must be >= 0"),
        ("model.use_crf", 2, "model.use_crf must be true or false, got 2"),
        ("model.classifier_hidden_layers", "512,0.5",
         "model.classifier_hidden_layers must be an integer .*, got '0.5'"),
        ("model.type_thresholds", "DISO=inf", "model.type_thresholds must be a finite number"),
    ],
)
def test_numbers_are_finite_whole_where_they_must_be_and_bounded(key, value, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(None, {key: value})


def test_numbers_as_text_follow_the_same_rules():
    config = load_config(None, {"training.epochs": "5", "training.lr": "3e-5", "training.seed": 2.0,
                                "model.use_crf": "yes"})
    assert (config.training.epochs, config.training.lr, config.training.seed, config.model.use_crf) == (
        5,
        3e-5,
        2,
        True,
    )


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        (
            "bomb.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            r"bomb.yaml:3: more than 16 YAML aliases",
        ),
        ("digits.yaml", "training:\n  epochs: " + "9" * 5000 + "\n",
         "digits.yaml: not a configuration: a number too long"),
        ("deep.yaml", "[" * 100000, "deep.yaml: not"),
        ("inf.json", '{"training": {"lr": Infinity}}', "inf.json: Infinity is not a JSON number"),
        ("digits.json", '{"training": {"epochs": ' + "9" * 5000 + "}}", "digits.json: a 5000-digit integer"),
        ("latin1.yaml", b"training:\n  log_with: \xe9\n", "latin1.yaml: not UTF-8 text"),
        ("list.yaml", "- 1\n- 2\n", "expected a mapping"),
        ("twice.yaml", "training:\n  epochs: 1\n  lr: 1e-3\n  epochs: 20\n",
         r"twice.yaml:4: key 'epochs' is given twice \(lines 2 and 4\)"),
        ("sections.yaml", "training:\n  epochs: 1\nmodel: {}\ntraining:\n  lr: 1e-3\n",
         r"sections.yaml:4: key 'training' is given twice \(lines 1 and 4\)"),
    ],
)
def test_hostile_config_files_are_a_config_error_naming_the_file(tmp_path, name, content, problem):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=problem):
        load_config(path)


def test_a_few_yaml_aliases_still_load_and_a_long_path_is_a_config_error(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("training: &t {epochs: 2}\nmodel: {head: linear}\n", encoding="utf-8")
    assert load_config(path).training.epochs == 2
    merged = tmp_path / "merged.yaml"  # a merge key's values may be overridden: that is no repeated key
    merged.write_text("search: {base: &b {epochs: 2, lr: 1e-3}}\ntraining:\n  <<: *b\n  epochs: 4\n",
                      encoding="utf-8")
    assert (load_config(merged).training.epochs, load_config(merged).training.lr) == (4, 1e-3)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / ("x" * 300 + ".yaml"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
