"""K-fold cross-validation by document: test folds stay untouched until their model is chosen.

For fold i, the documents of fold i are the test fold; a dev set is carved (seeded) from the *other* folds
only, and the trainer never sees the test fold: model selection and early stopping look at that dev set
alone. Each fold's model is then scored once on its test fold. The report gives the mean ± standard deviation
of span F1 over the test folds and a bootstrap 95% CI from the per-document counts pooled over all test folds.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cardioner import processes
from cardioner.config import Config, ConfigError
from cardioner.data.common import write_text_atomic
from cardioner.data.document import Document
from cardioner.data.paths import check_output
from cardioner.errors import CorpusError
from cardioner.evaluation import bootstrap_ci, score_spans
from cardioner.export import is_export
from cardioner.metrics.span_matching import prf
from cardioner.thresholds import average_thresholds
from cardioner.training.batch_size import train_with_batch_fallback
from cardioner.training.run import check_before_reading, read_split, split_dev

logger = logging.getLogger("cardioner")

DEFAULT_DEV_FRACTION = 0.1  # dev share of each training fold when data.dev_fraction is 0


def pool_documents(train: list[Document], dev: list[Document] | None) -> list[Document]:
    """Train and dev documents as one pool for cross-validation, every id unique.

    Splits whose ids restart in each file (JSONL exports numbering "0", "1", ... per split) are valid on their
    own; pooled, their ids collide. Then every id is prefixed with its split ("train/0", "dev/0"), so that
    folds, per-document counts and predictions keep the documents apart.

    Raises:
        CorpusError: an id appears twice within one split (before any training starts).
    """
    for name, docs in (("train", train), ("dev", dev or [])):
        _check_unique_ids(docs, f"the {name} corpus")
    if not dev:
        return list(train)
    if not {doc.id for doc in train} & {doc.id for doc in dev}:
        return train + dev
    logger.warning(
        "folds: train and dev share document ids (e.g. %r); ids are prefixed with their split "
        "(train/..., dev/...) in the pooled corpus",
        sorted({d.id for d in train} & {d.id for d in dev})[0],
    )
    return ([replace(doc, id=f"train/{doc.id}") for doc in train]
            + [replace(doc, id=f"dev/{doc.id}") for doc in dev])


def _check_unique_ids(docs: list[Document], where: str) -> None:
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise CorpusError(
                f"{where}: document id {doc.id!r} appears twice; cross-validation needs unique ids "
                "(folds and per-document scores are keyed by id)"
            )
        seen.add(doc.id)


def fold_assignments(
    docs: list[Document], k: int, seed: int, group_of: Callable[[Document], str] | None = None
) -> list[int]:
    """The fold (0..k-1) of each document; documents of one group always share a fold.

    Args:
        docs: the documents.
        k: number of folds (2 <= k <= number of groups).
        seed: seed of the shuffle of the groups.
        group_of: the group of a document (default: its id); e.g. the abstract a sentence comes from.

    Returns:
        fold index per document, in the order of ``docs``.
    """
    group_of = group_of or (lambda doc: doc.id)
    groups = sorted({group_of(doc) for doc in docs})
    if not 2 <= k <= len(groups):
        raise ValueError(f"the number of folds must be between 2 and the number of document groups "
                         f"({len(groups)}), got {k}")
    random.Random(seed).shuffle(groups)
    fold_of_group = {group: index % k for index, group in enumerate(groups)}
    return [fold_of_group[group_of(doc)] for doc in docs]


def cross_validate(
    config: Config,
    docs: list[Document],
    k: int,
    group_of: Callable[[Document], str] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    bootstrap_samples: int = 1000,
) -> dict:
    """Train one model per fold and score each on its untouched test fold.

    Args:
        config: the training Config; ``data.dev_fraction`` (or 0.1 when 0) sets the dev share carved from
            each training fold; ``training.seed`` seeds the folds, the dev carving and the training.
        docs: every document available (train and dev pooled); each lands in exactly one test fold.
        k: number of folds.
        group_of: the group of a document (default: its id); groups are never split across folds.
        on_epoch_end: called with (fold index, epoch row) after each epoch (e.g. for pruning); may raise.
        bootstrap_samples: resamples of the bootstrap CI.

    Returns:
        {"k", "seed", "dev_fraction", "folds": [per-fold counts and scores; "fold" counts from 1, as the log
        does], "mean_f1", "std_f1", "dev_mean_f1", "pooled": micro P/R/F1 over all test documents, "ci":
        bootstrap_ci(...) of the pooled counts, "mean_thresholds": {type: mean of the folds' dev-tuned
        thresholds} for a multi-label sigmoid model, else None; each fold row has its own "thresholds"}.
    """
    _check_unique_ids(docs, "cross-validation")  # before any fold trains (pool_documents pools train + dev)
    seed = config.training.seed
    fraction = config.data.dev_fraction or DEFAULT_DEV_FRACTION
    assignment = fold_assignments(docs, k, seed, group_of)
    # the dev share that each fold's run records is the one it trains with (0 means "the default" here)
    fold_config = config.replace(**{"training.output": None, "training.resume": False,
                                    "data.dev_fraction": fraction})
    folds, pooled_counts = [], {}
    for fold in range(k):
        test_docs = [doc for doc, f in zip(docs, assignment, strict=True) if f == fold]
        rest = [doc for doc, f in zip(docs, assignment, strict=True) if f != fold]
        train_docs, dev_docs = split_dev(rest, fraction, seed + fold)
        logger.info("fold %d/%d: %d train, %d dev (data.dev_fraction %g of the other folds), %d test "
                    "documents", fold + 1, k, len(train_docs), len(dev_docs), fraction, len(test_docs))
        callback = (lambda row, fold=fold: on_epoch_end(fold, row)) if on_epoch_end else None
        # the test fold is not given to the trainer: selection and early stopping see dev_docs only
        trainer, result = train_with_batch_fallback(
            fold_config, train_docs, dev_docs, None, on_epoch_end=callback
        )
        predictor = trainer.predictor
        predicted = predictor.evaluate(predictor.encoder.encode_corpus(test_docs, "test")).documents
        scores = score_spans(test_docs, predicted, match="exact")
        pooled_counts.update(scores["per_document"])
        micro = scores["micro"]
        thresholds = getattr(trainer.model.config, "thresholds", None)  # multi-label sigmoid: tuned on dev
        if thresholds:
            thresholds = dict(zip(trainer.model.config.channel_types, thresholds, strict=True))
        folds.append({"fold": fold + 1, "num_train": len(train_docs), "num_dev": len(dev_docs),
                      "num_test": len(test_docs), "best_epoch": result.best_epoch,
                      "dev_f1": (result.dev_metrics or {}).get("micro", {}).get("f1"),
                      "dev_scores": result.dev_metrics,
                      "test_precision": micro["precision"], "test_recall": micro["recall"],
                      "test_f1": micro["f1"], "test_tp": micro["tp"], "test_fp": micro["fp"],
                      "test_fn": micro["fn"], "thresholds": thresholds})
        logger.info(
            "fold %d/%d: dev F1 %.4f, test F1 %.4f", fold + 1, k, folds[-1]["dev_f1"] or 0.0, micro["f1"]
        )
    test_f1 = [row["test_f1"] for row in folds]
    tuned = [row["thresholds"] for row in folds if row["thresholds"]]
    mean_thresholds = None
    if tuned:  # multi-label sigmoid: one threshold per type from each fold's dev set, and their mean
        types = list(tuned[0])
        mean_thresholds = dict(
            zip(types, average_thresholds([[fold[t] for t in types] for fold in tuned]), strict=True)
        )
    totals = {key: sum(row[f"test_{key}"] for row in folds) for key in ("tp", "fp", "fn")}
    return {
        "k": k,
        "seed": seed,
        "dev_fraction": fraction,
        "folds": folds,
        "mean_f1": statistics.fmean(test_f1),
        "std_f1": statistics.stdev(test_f1),
        "dev_mean_f1": statistics.fmean(row["dev_f1"] or 0.0 for row in folds),
        "pooled": prf(totals["tp"], totals["fp"], totals["fn"]),
        "ci": bootstrap_ci(pooled_counts, n=bootstrap_samples, seed=seed),
        "mean_thresholds": mean_thresholds,
    }


def read_train_and_dev(config: Config, pooled: bool) -> tuple[list[Document], list[Document] | None]:
    """Train and dev documents for a search, which selects on dev and never reads the test corpus.

    Args:
        config: names the corpora (``data.train``, ``data.dev``, ``data.dev_fraction``).
        pooled: train and dev as one pool for cross-validation (``pool_documents``; the folds carve their own
            dev sets), else dev from ``data.dev`` or carved from train by ``data.dev_fraction``.

    Returns:
        (train documents, dev documents; None when pooled).
    """
    if not config.data.train:
        raise ConfigError("data.train is not set: no training corpus")
    train = read_split(config.data.train, config, "train")
    dev = read_split(config.data.dev, config, "dev")
    if pooled:
        return pool_documents(train, dev), None
    if dev is None:
        if config.data.dev_fraction <= 0:
            raise ConfigError("a search needs a dev set: set data.dev or data.dev_fraction > 0 "
                              "(or cross-validate with folds)")
        train, dev = split_dev(train, config.data.dev_fraction, config.training.seed)
    return train, dev


def run_cross_validation(config: Config, k: int) -> dict:
    """``cardioner train --folds K``: pool the train (and dev) corpora, cross-validate, write cv_results.json.

    A test corpus in the config is not used: every document is tested once, in its own fold.
    """
    processes.refuse_several("cross-validation")
    if config.training.output:  # cv_results.json goes there: a new folder, an export or an earlier one only
        check_output(config.training.output, "folder",
                     lambda folder: is_export(folder) or (folder / "cv_results.json").is_file(),
                     "an export or an earlier cross-validation (cv_results.json)")
    check_before_reading(config)
    docs = read_split(config.data.train, config, "train")
    dev = read_split(config.data.dev, config, "dev")
    # every document is a test document once; dev is carved from the training folds
    docs = pool_documents(docs, dev)
    if config.data.test:
        logger.warning(
            "folds: the test corpus %s is not used (each fold is tested in turn)", config.data.test
        )
    result = cross_validate(config, docs, k)
    if config.training.output:
        path = Path(config.training.output) / "cv_results.json"
        write_text_atomic(path, json.dumps(result, indent=2))
        result["path"] = str(path)
    return result
