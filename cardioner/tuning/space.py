"""The search space of ``cardioner tune``: config keys and their distributions, and a trial's config.

A search space maps dotted config keys onto distributions. It comes from the ``search:`` section of the
config file, or from ``default_search_space`` (per head)::

    search:
      training.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      training.batch_size: [8, 16, 32]                  # a list is a categorical choice
      model.use_crf: [false, true]
      model.classifier_hidden_layers: {type: categorical, choices:
      ["256", "512,256"], when: {model.head: mlp}}

``when`` makes a parameter conditional on other keys (sampled earlier or fixed in the base config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cardioner.config import Config, ConfigError, coerce_value, load_config, read_config_file, resolve_key

SEARCH_SECTION = "search"
PARAM_TYPES = ("float", "int", "categorical")


@dataclass(frozen=True)
class SearchParam:
    """One searched config key and its distribution."""

    key: str  # dotted config key, e.g. "training.lr"
    type: str  # float | int | categorical
    low: float | None = None  # float/int: lower bound (inclusive)
    high: float | None = None  # float/int: upper bound (inclusive)
    log: bool = False  # float/int: sample on a log scale
    step: float | None = None  # float/int: grid step (None = continuous / 1 for int)
    choices: tuple = ()  # categorical: the values (None, bool, int, float or str; "512,256" for a tuple)
    when: tuple[tuple[str, Any], ...] = ()  # only sampled when every (key, value) holds

    def suggest(self, trial) -> Any:
        """Sample this parameter in an Optuna trial (the parameter's name is its dotted key)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.key, list(self.choices))

    def applies(self, config: Config) -> bool:
        """Whether every ``when`` condition holds in ``config``."""
        return all(config.get(key) == value for key, value in self.when)


def parse_search_space(raw: dict, source: str = "search") -> list[SearchParam]:
    """Read a ``search:`` mapping (dotted or short config keys -> distribution) into SearchParams.

    Args:
        raw: ``{key: [choices] | {"type", "low", "high", "log", "step", "choices", "when"}}``.
        source: where it came from, for error messages (e.g. the file name).

    Returns:
        the parameters in declaration order (conditions may refer to earlier keys).
    """
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{source}: '{SEARCH_SECTION}' must be a non-empty mapping of config keys, got {raw!r}"
        )
    return [_parse_param(str(raw_key), spec, source) for raw_key, spec in raw.items()]


def _parse_param(raw_key: str, spec: Any, source: str) -> SearchParam:
    """One entry of a ``search:`` mapping."""
    where = f"{source}: {SEARCH_SECTION}.{raw_key}"
    key = resolve_key(raw_key, source)
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a list of choices or a mapping, got {spec!r}")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices", "when"}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    kind = spec.get("type", "categorical" if "choices" in spec else "float")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}.type must be one of {PARAM_TYPES}, got {kind!r}")
    # A condition's value is read as the config reads the key: YAML [512, 256] or "512,256" -> (512, 256).
    when = tuple((resolve_key(str(k), source), coerce_value(str(k), v, f"{where}.when"))
                 for k, v in (spec.get("when") or {}).items())
    if kind == "categorical":
        choices = tuple(_choice(c) for c in spec.get("choices") or ())
        if not choices:
            raise ConfigError(f"{where} needs at least one choice")
        return SearchParam(key, kind, choices=choices, when=when)
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where} needs numeric low and high, got {spec!r}") from None
    if low > high or (spec.get("log") and low <= 0):
        raise ConfigError(f"{where}: bad range [{low}, {high}] (log needs low > 0)")
    step = float(spec["step"]) if spec.get("step") is not None else None
    return SearchParam(key, kind, low, high, bool(spec.get("log", False)), step, when=when)


def _choice(value: Any) -> Any:
    """Optuna stores None/bool/int/float/str; a list (hidden layer sizes) becomes "512,256"."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


def default_search_space(config: Config) -> list[SearchParam]:
    """The default space for the config's head: learning rates, regularisation, warm-up, batch, CRF, head."""
    space = {
        "training.lr": {"type": "float", "low": 1e-5, "high": 2e-4, "log": True},
        "training.head_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "training.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
        "model.classifier_dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
        "training.batch_size": [8, 16, 32],
        "model.use_crf": [False, True],
        "training.crf_lr": {
            "type": "float",
            "low": 1e-4,
            "high": 1e-1,
            "log": True,
            "when": {"model.use_crf": True},
        },
    }
    if config.model.use_crf or config.model.label_smoothing or config.model.focal_gamma:
        # A config that fixes a CRF keeps it; softmax-only losses (label smoothing, focal) refuse a CRF.
        del space["model.use_crf"]
        if not config.model.use_crf:
            del space["training.crf_lr"]
    if config.model.head == "mlp":
        space["model.classifier_hidden_layers"] = ["256", "512,256", "256,128"]
        space["model.classifier_activation"] = ["gelu", "relu", "tanh"]
    return parse_search_space(space, f"default search space ({config.model.head} head)")


def load_tuning_config(path: str | Path,
                       overrides: dict[str, Any] | None = None) -> tuple[Config, list[SearchParam] | None]:
    """Read a config file that may hold a ``search:`` section; return (base Config, search space or None)."""
    config = load_config(path, overrides)
    search = read_config_file(Path(path)).get(SEARCH_SECTION)  # the same reading rules as load_config's
    return config, (parse_search_space(search, str(path)) if search is not None else None)


def sample_config(trial, space: list[SearchParam], base: Config) -> Config:
    """The base config with this trial's sampled keys (conditional keys only where their ``when`` holds)."""
    values: dict[str, Any] = {}
    for param in space:
        if param.applies(base.replace(**values) if values else base):
            values[param.key] = param.suggest(trial)
    return base.replace(**values) if values else base
