"""Hyperparameter search over the training config, in three parts:

- ``space``: config keys and their distributions (the ``search:`` section, or a default per head), and the
  config of one trial;
- ``optuna_study``: TPE with pruning over epochs, resumable and shared through a storage URL (``tune``);
- ``pbt``: population-based training on Ray Tune, the best member exported (``tune_pbt``).

Optuna and Ray are optional dependencies (the ``tune`` and ``ray`` extras), imported only where they run.
"""

from cardioner.tuning.optuna_study import PRUNERS, study_summary, tune, write_study_outputs
from cardioner.tuning.pbt import RayUnavailableError, tune_pbt
from cardioner.tuning.space import (
    SearchParam,
    default_search_space,
    load_tuning_config,
    parse_search_space,
    sample_config,
)

METHODS = ("optuna", "pbt")

__all__ = [
    "METHODS",
    "PRUNERS",
    "RayUnavailableError",
    "SearchParam",
    "default_search_space",
    "load_tuning_config",
    "parse_search_space",
    "sample_config",
    "study_summary",
    "tune",
    "tune_pbt",
    "write_study_outputs",
]
