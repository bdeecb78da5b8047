"""The config: defaults that adapt (stride), explicit None in replace, null in YAML, suggestions for unknown keys."""

from __future__ import annotations

import pytest

from cardioner.config import ConfigError, config_from_dict, load_config
from cardioner.task import _window_stride


def test_the_default_stride_follows_the_window_and_an_explicit_one_is_checked():
    for max_length in (16, 32, 64):
        config = load_config(None, {"data.max_length": max_length})  # no stride given: nothing to clash with
        assert config.data.stride is None
        assert _window_stride(config.data.stride, max_length) == max_length // 4
    assert _window_stride(None, 512) == 128
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
