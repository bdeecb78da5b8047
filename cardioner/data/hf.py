"""Hugging Face ``datasets``: a ``Dataset``, a ``DatasetDict`` or a folder written by ``save_to_disk``.

Rows hold either ``tokens`` + ``ner_tags`` (ids named by the ``ClassLabel`` feature, or by ``label_names``) or
``text`` + ``spans`` (or the CardioNER ``tags``); each row becomes one document through the same code as
JSONL. Ids: the ``id`` column when present, else ``SPLIT#n`` (n = row index from 1; ``SPLIT`` = the split
name, or ``data`` for a bare ``Dataset``).

A folder is checked before ``datasets`` opens it, and anything ``datasets`` raises on a damaged folder (a
``null`` split list, no data files, features it cannot build...) becomes a CorpusError naming the folder (and
the JSON file and line where the damage is found), never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cardioner.data.common import check_span_errors
from cardioner.data.document import CorpusError, Document, ReadReport, check_flat
from cardioner.data.jsonl import record_to_document
from cardioner.values import InvalidValue, loads_json


def _class_label_names(dataset: Any) -> list[str] | None:
    """The names of the ``ner_tags`` ClassLabel feature, if the dataset has one."""
    feature = getattr(dataset, "features", {}).get("ner_tags")
    inner = getattr(feature, "feature", None)
    return list(inner.names) if hasattr(inner, "names") else None


def _rows_as_records(row: dict) -> dict:
    """Undo datasets' struct-of-lists layout for ``spans``/``tags``
    (``{"start": [...], ...}`` -> list of dicts)."""
    for key in ("spans", "tags"):
        value = row.get(key)
        if isinstance(value, dict):
            keys = list(value)
            row[key] = [dict(zip(keys, values, strict=True)) for values in zip(*value.values(), strict=True)]
    return row


def _rows(dataset: Any, where: str) -> Iterator[dict]:
    """The rows of ``dataset``; an error while ``datasets`` reads a damaged Arrow file is a CorpusError."""
    rows = iter(dataset)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as error:  # pyarrow's errors on a truncated or corrupted file
            raise CorpusError(f"cannot read the dataset's rows ({type(error).__name__}: {str(error)[:200]})",
                              where) from None
        yield row


def _read_dataset(dataset: Any, split: str, label_names: Sequence[str] | None, report: ReadReport,
                  where: str, flat: bool = False, span_errors: str = "error") -> list[Document]:
    """Documents from one ``datasets.Dataset`` (with ``flat``,
    overlapping spans raise CorpusError naming the row)."""
    columns = set(dataset.column_names)
    if not ({"tokens", "ner_tags"} <= columns or "text" in columns):
        raise CorpusError(
            f"dataset split {split!r} has columns {sorted(columns)}; expected tokens+ner_tags or "
            "text+spans",
            where,
        )
    names = label_names if label_names is not None else _class_label_names(dataset)
    docs = []
    for i, row in enumerate(_rows(dataset, f"{where} split {split}")):
        doc = record_to_document(_rows_as_records(dict(row)), f"{split}#{i + 1}", report, names,
                                 f"{where} split {split}", i + 1, span_errors)
        if flat:
            check_flat(doc, f"{where} split {split}", i + 1)
        docs.append(doc)
        report.documents += 1
        report.spans += len(doc.spans)
    return docs


def _json_file(path: Path, folder: str) -> Any:
    """The JSON in ``path`` (a file of a save_to_disk folder), or CorpusError naming the file and line."""
    try:
        return loads_json(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CorpusError(f"not valid JSON ({error.msg}); the dataset folder {folder} is damaged", path,
                          error.lineno) from None
    except (InvalidValue, UnicodeDecodeError, OSError) as error:
        raise CorpusError(f"cannot be read ({error}); the dataset folder {folder} is damaged", path) from None


def _check_saved_folder(folder: Path) -> None:
    """The layout ``save_to_disk`` writes, checked before ``datasets`` reads it (its errors name no file)."""
    if (folder / "dataset_dict.json").is_file():
        info = _json_file(folder / "dataset_dict.json", str(folder))
        splits = info.get("splits") if isinstance(info, dict) else None
        if (
            not isinstance(splits, list)
            or not splits
            or not all(isinstance(name, str) and name for name in splits)
        ):
            raise CorpusError(f"'splits' must be a non-empty list of split names, got {splits!r:.80}",
                              folder / "dataset_dict.json")
        for name in splits:
            if "/" in name or name.startswith(".") or not (folder / name).is_dir():
                raise CorpusError(
                    f"split {name!r} has no folder {folder / name}", folder / "dataset_dict.json"
                )
            _check_saved_folder(folder / name)
        return
    state = _json_file(folder / "state.json", str(folder))
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not files or not all(
            isinstance(item, dict) and isinstance(item.get("filename"), str) and "/" not in item["filename"]
            and (folder / item["filename"]).is_file() for item in files):
        raise CorpusError(f"'_data_files' must list the split's data files in this folder, got {files!r:.80}",
                          folder / "state.json")
    if (folder / "dataset_info.json").is_file():
        info = _json_file(folder / "dataset_info.json", str(folder))
        if not isinstance(info, dict) or not isinstance(info.get("features", {}), (dict, type(None))):
            raise CorpusError("'features' must be an object", folder / "dataset_info.json")


def read_hf(obj_or_folder: Any, split: str | None = None, label_names: Sequence[str] | None = None,
            report: ReadReport | None = None, flat: bool = False,
            span_errors: str = "error") -> list[Document]:
    """Read a ``datasets.Dataset``/``DatasetDict`` or a ``save_to_disk`` folder.

    Args:
        obj_or_folder: the dataset object or the folder.
        split: one split of a DatasetDict (default: all splits, ids prefixed by the split name).
        label_names: tag names for integer ``ner_tags`` (default: the ClassLabel feature's names).
        report: counts (a new one if None).
        flat: the task is flat: overlapping spans raise CorpusError naming the split and the row.
        span_errors: a span whose ``"text"`` is not what its offsets cover: "error", "skip" or "realign".

    Returns:
        The documents.
    """
    import datasets  # slow to import (pyarrow): only Hugging Face inputs need it

    report = report if report is not None else ReadReport()
    check_span_errors(span_errors)
    where = "dataset"
    obj = obj_or_folder
    if isinstance(obj, (str, Path)):
        where = str(obj)
        folder = Path(obj)
        if not (folder / "dataset_dict.json").is_file() and not (folder / "state.json").is_file():
            raise CorpusError(
                "not a dataset folder written by save_to_disk (no dataset_dict.json or state.json)", where
            )
        _check_saved_folder(folder)
        try:
            obj = datasets.load_from_disk(str(obj))
        except Exception as error:  # a damaged folder: datasets raises TypeError, KeyError, ArrowInvalid...
            raise CorpusError(
                f"not a readable dataset folder written by save_to_disk ({type(error).__name__}: "
                f"{str(error)[:200]})",
                where,
            ) from None
    if isinstance(obj, datasets.DatasetDict):
        if split is not None:
            if split not in obj:
                raise CorpusError(f"no split {split!r} (splits: {sorted(obj)})", where)
            return _read_dataset(obj[split], split, label_names, report, where, flat, span_errors)
        docs = []
        for name in obj:
            for doc in _read_dataset(obj[name], name, label_names, report, where, flat, span_errors):
                if "id" in obj[name].column_names:
                    doc.id = f"{name}/{doc.id}"
                docs.append(doc)
        return docs
    if isinstance(obj, datasets.Dataset):
        return _read_dataset(obj, split or "data", label_names, report, where, flat, span_errors)
    raise CorpusError(
        f"expected a datasets.Dataset, DatasetDict or a save_to_disk folder, got {type(obj).__name__}"
    )
