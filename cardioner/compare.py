"""Compare token heads on one corpus: same data, seed and
budget for each; a JSON file, a Markdown table, a plot.

``compare_heads`` trains one model per head (and CRF setting) with ``ModelTrainer``, exports each under
``output_dir/<run>``, scores it on the test set (dev when there is none), times inference, and writes
``comparison.json``, ``comparison.md`` and ``comparison.png``. ``tabulate_exports`` makes the same three files
from existing export folders (their config.json and metrics.json), without training.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from safetensors import safe_open
from tqdm.auto import tqdm

from cardioner import plots, processes
from cardioner.config import Config, ConfigError
from cardioner.data.common import atomic_path, write_text_atomic
from cardioner.data.paths import check_output
from cardioner.export import is_export
from cardioner.modeling import TOKEN_HEADS
from cardioner.training.run import check_before_reading, read_split, split_dev
from cardioner.training.trainer import ModelTrainer

logger = logging.getLogger("cardioner")

CRF_SETTINGS = {"off": (False,), "on": (True,), "both": (False, True)}
CRF_HEAD = "crf"  # in a list of heads: the linear head with a CRF (DESIGN's `--heads linear,mlp,crf`)
ALL_HEADS = tuple(TOKEN_HEADS)


def run_name(head: str, use_crf: bool) -> str:
    """Folder and row name of one run: ``bilstm`` or ``bilstm_crf``, a Python identifier (transformers imports
    an export's modeling.py under its folder's name, and warns three times about any other name)."""
    return f"{head}_crf" if use_crf else head


def compare_heads(config: Config, heads: Sequence[str], crf: str | None = None,
                  output_dir: str | Path = "comparison") -> dict:
    """Train one model per head and CRF setting on the same data, seed and budget; write the comparison files.

    Args:
        config: the base configuration (data paths, backbone, training budget); ``model.head`` and
            ``model.use_crf`` are set per run, everything else is shared.
        heads: head names (keys of ``modeling.TOKEN_HEADS``); ``crf`` stands for the linear head with a CRF
            (run ``linear_crf``), whatever ``crf`` says.
        crf: "off", "on" or "both"; None = the config's ``model.use_crf`` ("on" when true, else "off").
        output_dir: where the exports (one folder per run) and comparison.json/.md/.png go.

    Returns:
        the comparison: {"settings": {...}, "runs": [row per run]} (rows as ``export_row`` makes them).
    """
    processes.refuse_several("comparing heads")
    unknown = [head for head in heads if head not in TOKEN_HEADS and head != CRF_HEAD]
    if unknown or not heads:
        raise ValueError(f"unknown heads {unknown or list(heads)}; expected names from "
                         f"{sorted(TOKEN_HEADS)} (or {CRF_HEAD!r}: the linear head with a CRF)")
    if crf is None:
        crf = "on" if config.model.use_crf else "off"
    if crf not in CRF_SETTINGS:
        raise ValueError(f"crf must be one of {', '.join(CRF_SETTINGS)}; got {crf!r}")
    output_dir = Path(output_dir)
    runs = list(dict.fromkeys(run for head in heads for run in (
        [("linear", True)] if head == CRF_HEAD else [(head, use_crf) for use_crf in CRF_SETTINGS[crf]])))
    check_comparison_folder(output_dir)
    check_before_reading(config, [output_dir / run_name(head, use_crf) for head, use_crf in runs])
    if not (config.data.dev or config.data.test or config.data.dev_fraction > 0):
        raise ConfigError("compare scores each head on a test or dev corpus: set data.test or data.dev "
                          "(or data.dev_fraction)")
    output_dir.mkdir(parents=True, exist_ok=True)
    train = read_split(config.data.train, config, "train")
    dev = read_split(config.data.dev, config, "dev")
    test = read_split(config.data.test, config, "test")
    if dev is None and config.data.dev_fraction > 0:
        train, dev = split_dev(train, config.data.dev_fraction, config.training.seed)
    comparison = {"settings": {"base_config": config.to_dict(), "heads": list(heads), "crf": crf,
                               "scored_on": "test" if test else "dev"}, "runs": []}
    progress = tqdm(runs, desc="comparing heads", unit="run")
    for head, use_crf in progress:
        name = run_name(head, use_crf)
        progress.set_postfix_str(name)
        logger.info("compare: run %d/%d: %s", len(comparison["runs"]) + 1, len(runs), name)
        run_config = config.replace(**{"model.head": head, "model.use_crf": use_crf,
                                       "training.output": str(output_dir / name)})
        trainer = ModelTrainer(run_config)
        trainer.train(list(train), list(dev) if dev else None, list(test) if test else None)
        folder = trainer.save(output_dir / name)
        _record_run_facts(folder, trainer, "test" if test else "dev")
        comparison["runs"].append(export_row(folder))
        write_comparison(comparison, output_dir)  # after every run: a crash keeps what is done
    return comparison


def _record_run_facts(folder: Path, trainer, split: str) -> None:
    """Add inference speed and parameter counts to the export's metrics.json (under "compare")."""
    corpus = trainer.corpora.test if split == "test" else trainer.corpora.dev
    tokens = sum(len(window["input_ids"]) for window in corpus.windows)
    started = time.perf_counter()
    trainer.predictor.predict_windows(corpus.encoded, desc=f"timing inference on {split}")
    seconds = time.perf_counter() - started
    named = list(trainer.model.named_parameters())
    facts = {"inference_tokens_per_second": tokens / max(seconds, 1e-9), "inference_tokens": tokens,
             "parameters": sum(p.numel() for _, p in named),
             "head_parameters": sum(p.numel() for n, p in named if not n.startswith("backbone.")),
             "scored_on": split}
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["compare"] = facts
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    staging.replace(path)


def export_row(folder: str | Path) -> dict:
    """One comparison row from an export folder: head settings
    (config.json), scores and timings (metrics.json).

    Scores are the test scores when the folder has them, else the dev scores. Parameter counts come from
    metrics.json's "compare" entry, or from the tensor shapes in model.safetensors.
    """
    folder = Path(folder)
    config_path, metrics_path = folder / "config.json", folder / "metrics.json"
    for path in (config_path, metrics_path):
        if not path.is_file():
            raise ValueError(f"{folder}: not a cardioner export ({path.name} missing)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    facts = metrics.get("compare") or {}
    split = "test" if metrics.get("test") else "dev"
    scores = metrics.get(split) or {}
    if facts.get("parameters") is None and (folder / "model.safetensors").is_file():
        facts = {**facts, **_count_parameters(folder / "model.safetensors")}
    head, use_crf = config.get("head", "linear"), bool(config.get("use_crf", False))
    return {
        "name": folder.name if folder.name else run_name(head, use_crf),
        "head": head,
        "use_crf": use_crf,
        "num_layers_to_use": config.get("num_layers_to_use", 1),
        "layer_combination": config.get("layer_combination", "concat"),
        "use_combined": config.get("use_combined", False),
        "scored_on": split,
        "micro_f1": scores.get("micro", {}).get("f1"),
        "macro_f1": scores.get("macro", {}).get("f1"),
        "per_type_f1": {
            label: values.get("f1") for label, values in sorted(scores.get("per_type", {}).items())
        },
        "parameters": facts.get("parameters"),
        "head_parameters": facts.get("head_parameters"),
        "train_seconds": metrics.get("train_seconds"),
        "inference_tokens_per_second": facts.get("inference_tokens_per_second"),
        "export": str(folder),
    }


def _count_parameters(weights_path: Path) -> dict:
    total = head = 0
    with safe_open(str(weights_path), framework="pt") as weights:
        for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
            if key == "token_classes":
                continue  # a buffer (word segmentation table), not a parameter
            count = 1
            for size in weights.get_slice(key).get_shape():
                count *= size
            total += count
            head += 0 if key.startswith("backbone.") else count
    return {"parameters": total, "head_parameters": head}


def export_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Export folders named by ``paths``: each path is an
    export, or a folder of exports (a compare output)."""
    folders: list[Path] = []
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            folders.append(path)
        elif path.is_dir() and (inner := sorted(p.parent for p in path.glob("*/metrics.json"))):
            folders.extend(inner)
        else:
            raise ValueError(f"{path}: neither an export folder (config.json) nor a folder of exports")
    return folders


def tabulate_exports(paths: Sequence[str | Path], output_dir: str | Path = "comparison") -> dict:
    """The comparison files for existing exports, without training.

    Args:
        paths: export folders, or folders holding exports (e.g. an earlier compare's output).
        output_dir: where comparison.json/.md/.png go.

    Returns:
        the comparison dict, as ``compare_heads`` returns it.
    """
    check_comparison_folder(Path(output_dir))
    rows = [
        export_row(folder) for folder in tqdm(export_folders(paths), desc="reading exports", unit="export")
    ]
    comparison = {"settings": {"compare_only": [str(p) for p in paths]}, "runs": rows}
    write_comparison(comparison, Path(output_dir))
    return comparison


def markdown_table(rows: list[dict]) -> str:
    """The comparison as a Markdown table: F1 per type,
    micro/macro F1, parameters, train time, inference speed."""
    types = sorted({label for row in rows for label in row["per_type_f1"]})
    header = ["run", "head", "CRF", "layers", *[f"F1 {label}" for label in types], "micro F1", "macro F1",
              "head params", "total params", "train time (s)", "inference (tokens/s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        layers = str(row["num_layers_to_use"]) + (
            f" ({row['layer_combination']})" if row["num_layers_to_use"] > 1 else ""
        )
        cells = [row["name"], row["head"], "yes" if row["use_crf"] else "no", layers,
                 *[_number(row["per_type_f1"].get(label), 4) for label in types],
                 _number(row["micro_f1"], 4), _number(row["macro_f1"], 4), _count(row["head_parameters"]),
                 _count(row["parameters"]), _number(row["train_seconds"], 1),
                 _number(row["inference_tokens_per_second"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    scored = sorted({row["scored_on"] for row in rows})
    return "\n".join(lines) + f"\n\nScores: span-level exact match on the {' / '.join(scored)} set.\n"


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def check_comparison_folder(output_dir: Path) -> None:
    """Raise CorpusError unless ``output_dir`` is new, empty or an earlier comparison (comparison.json, or
    only exports): a comparison never writes into another folder (``data.paths``)."""

    def earlier_comparison(folder: Path) -> bool:
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
        return (folder / "comparison.json").is_file() or all(is_export(entry) for entry in entries)

    check_output(
        output_dir, "folder", earlier_comparison, "an earlier comparison (comparison.json or exports)"
    )


def write_comparison(comparison: dict, output_dir: Path) -> dict[str, Path]:
    """Write comparison.json, comparison.md and comparison.png into ``output_dir``; returns their paths."""
    paths = {"json": output_dir / "comparison.json", "md": output_dir / "comparison.md",
             "png": output_dir / "comparison.png"}
    for kind, text in (("json", json.dumps(comparison, indent=2)),
                       ("md", markdown_table(comparison["runs"]))):
        write_text_atomic(paths[kind], text)
    with atomic_path(paths["png"]) as temporary:
        drawn = temporary.with_suffix(".png")  # matplotlib takes the image format from the file name
        try:
            plots.plot_comparison(comparison["runs"], drawn)  # through the module: tests replace it
            drawn.replace(temporary)
        finally:
            drawn.unlink(missing_ok=True)
    return paths
