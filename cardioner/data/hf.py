"""Hugging Face ``datasets``: a ``Dataset``, a ``DatasetDict`` or a folder written by ``save_to_disk``.

Rows hold either ``tokens`` + ``ner_tags`` (ids named by the ``ClassLabel`` feature, or by ``label_names``) or
``text`` + ``spans`` (or the CardioNER ``tags``); each row becomes one document through the same code as JSONL.
Ids: the ``id`` column when present, else ``SPLIT#n`` (n = row index from 1; ``SPLIT`` = the split name, or
``data`` for a bare ``Dataset``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardioner.data.document import CorpusError, Document, ReadReport, check_flat
from cardioner.data.jsonl import record_to_document


def _class_label_names(dataset: Any) -> list[str] | None:
    """The names of the ``ner_tags`` ClassLabel feature, if the dataset has one."""
    feature = getattr(dataset, "features", {}).get("ner_tags")
    inner = getattr(feature, "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def _rows_as_records(row: dict) -> dict:
    """Undo datasets' struct-of-lists layout for ``spans``/``tags`` (``{"start": [...], ...}`` -> list of dicts)."""
    for key in ("spans", "tags"):
        value = row.get(key)
        if isinstance(value, dict):
            keys = list(value)
            row[key] = [dict(zip(keys, values, strict=True)) for values in zip(*value.values(), strict=True)]
    return row


def _read_dataset(dataset: Any, split: str, label_names: Sequence[str] | None, report: ReadReport,
                  where: str, flat: bool = False) -> list[Document]:
    """Documents from one ``datasets.Dataset`` (with ``flat``, overlapping spans raise CorpusError naming the row)."""
    columns = set(dataset.column_names)
    if not ({"tokens", "ner_tags"} <= columns or "text" in columns):
        raise CorpusError(f"dataset split {split!r} has columns {sorted(columns)}; expected tokens+ner_tags or "
                          "text+spans", where)
    names = label_names if label_names is not None else _class_label_names(dataset)
    docs = []
    for i, row in enumerate(dataset):
        doc = record_to_document(_rows_as_records(dict(row)), f"{split}#{i + 1}", report, names,
                                 f"{where} split {split}", i + 1)
        if flat:
            check_flat(doc, f"{where} split {split}", i + 1)
        docs.append(doc)
        report.documents += 1
        report.spans += len(doc.spans)
    return docs


def read_hf(obj_or_folder: Any, split: str | None = None, label_names: Sequence[str] | None = None,
            report: ReadReport | None = None, flat: bool = False) -> list[Document]:
    """Read a ``datasets.Dataset``/``DatasetDict`` or a ``save_to_disk`` folder.

    Args:
        obj_or_folder: the dataset object or the folder.
        split: one split of a DatasetDict (default: all splits, ids prefixed by the split name).
        label_names: tag names for integer ``ner_tags`` (default: the ClassLabel feature's names).
        report: counts (a new one if None).
        flat: the task is flat: overlapping spans raise CorpusError naming the split and the row.

    Returns:
        The documents.
    """
    import datasets

    report = report if report is not None else ReadReport()
    where = "dataset"
    obj = obj_or_folder
    if isinstance(obj, (str, Path)):
        where = str(obj)
        try:
            obj = datasets.load_from_disk(str(obj))
        except FileNotFoundError as err:
            raise CorpusError(f"not a dataset folder written by save_to_disk ({err})", where) from None
    if isinstance(obj, datasets.DatasetDict):
        if split is not None:
            if split not in obj:
                raise CorpusError(f"no split {split!r} (splits: {sorted(obj)})", where)
            return _read_dataset(obj[split], split, label_names, report, where, flat)
        docs = []
        for name in obj:
            for doc in _read_dataset(obj[name], name, label_names, report, where, flat):
                if "id" in obj[name].column_names:
                    doc.id = f"{name}/{doc.id}"
                docs.append(doc)
        return docs
    if isinstance(obj, datasets.Dataset):
        return _read_dataset(obj, split or "data", label_names, report, where, flat)
    raise CorpusError(f"expected a datasets.Dataset, DatasetDict or a save_to_disk folder, got {type(obj).__name__}")
