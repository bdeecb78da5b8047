"""Documents in, spans out: prediction and evaluation with an exported model, on documents of any length.

Under a launcher (``torchrun``, ``accelerate launch``) every process reads the input and loads the model (on
its own GPU, when there are GPUs); the windows' batches are shared out and the predictions gathered
(``Predictor.predict_windows``), so the spans are those of one process; the main process alone writes the
output, the others waiting until it is complete.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cardioner import processes
from cardioner.config import ConfigError
from cardioner.data.common import (
    check_unique_ids,
    progress,
    read_text,
    relative_id,
    write_text_atomic,
)
from cardioner.data.document import CorpusError, Document
from cardioner.data.io import check_output_target, read_corpus, write_corpus
from cardioner.data.jsonl import read_jsonl
from cardioner.data.paths import check_output, check_writable_ids, corpus_files
from cardioner.export import is_export, load_model
from cardioner.predictor import DEFAULT_BATCH_SIZE, Predictor
from cardioner.view import evaluation_page, is_view_page, prediction_page

logger = logging.getLogger("cardioner")

PREDICT_FORMATS = ("brat", "jsonl", "tsv", "html")


def check_predict_format(format: str) -> None:
    """Raise a one-sentence error for an output format predict cannot write."""
    if format not in PREDICT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(PREDICT_FORMATS)}, got {format!r}")


def check_batch_size(batch_size: int) -> None:
    """Raise a one-sentence error for a batch size below 1."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def load_predictor(model_dir: str | Path, max_length: int | None = None, stride: int | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> Predictor:
    """The Predictor of an export: the installed package's classes, windows as the model was trained unless
    ``max_length`` / ``stride`` say otherwise."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir}: not an exported model folder (no config.json)")
    if not is_export(model_dir):
        raise ConfigError(
            f"{model_dir}: not an exported model folder (its config.json describes "
            f"{_described_model(model_dir)}, not a cardioner export; train one with cardioner train)"
        )
    model, tokenizer = load_model(model_dir)
    model.eval()
    if processes.num_processes() > 1:
        model.to(processes.device())  # each process on its own device (the CPU for all of them without GPUs)
    return Predictor.from_model(model, tokenizer, max_length=max_length, stride=stride, batch_size=batch_size)


def _described_model(model_dir: Path) -> str:
    """What a non-cardioner config.json describes: "a 'bert' model", or "no model" when it is unreadable."""
    try:
        model_type = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        model_type = None
    return f"a {model_type!r} model"


def read_inputs(path: str | Path) -> list[Document]:
    """Documents to annotate: a ``.txt`` file, a folder of
    them (recursive), or JSONL with ``id`` and ``text``.

    Texts are read exactly as stored (no newline translation, BOM kept), so offsets index the file. In a
    folder, hidden files and folders (a staging folder of an interrupted write, ``.ipynb_checkpoints``) are
    not read and a symbolic link is an error (``data.paths.corpus_files``).
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError("no such file or folder", path)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        docs = read_jsonl(path)
        check_unique_ids(docs, path)  # predictions are written per id: a repeated id would overwrite one
        return docs
    if path.is_file():
        return [Document(path.stem, read_text(path, allow_empty=True), [], {"path": str(path)})]
    files = [f for f in corpus_files(path) if f.suffix == ".txt"]
    if not files:
        raise CorpusError("no .txt files in the folder", path)
    return [Document(relative_id(f, path, ".txt"), read_text(f, allow_empty=True), [], {"path": str(f)})
            for f in progress(files, "reading")]


def write_predictions(docs: list[Document], output: str | Path, format: str, subtitle: str = "") -> Path:
    """Write predicted documents as brat (NAME.txt + NAME.ann per document), JSONL, MultiCardioNER TSV or one
    self-contained HTML page (``cardioner.view``; ``subtitle`` is the line under its title)."""
    check_predict_format(format)
    output = Path(output)
    if format == "html":
        total = sum(len(doc.spans) for doc in docs)
        page = prediction_page(docs, subtitle=subtitle + f"{len(docs)} documents, {total} entities")
        write_text_atomic(output, page, is_view_page, "a page cardioner wrote")
    else:
        write_corpus(docs, output, format)
    return output


def predict_path(model_dir: str | Path, input: str | Path, output: str | Path, format: str = "brat",
                 batch_size: int = 32, max_length: int | None = None,
                 stride: int | None = None) -> list[Document]:
    """Annotate ``input`` with the model in ``model_dir`` and write the predictions to ``output``.

    The output and the documents' ids are checked before the model runs: an existing output that is not an
    earlier one of ``format`` is refused (and left as it is), as are ids ``format`` cannot hold.

    Returns:
        The predicted documents.
    """
    check_predict_format(format)
    check_batch_size(batch_size)
    if format == "html":  # before the model runs: only a page cardioner wrote may be replaced
        check_output(output, "file", is_view_page, "a page cardioner wrote")
    else:
        check_output_target(output, format)
    docs = read_inputs(input)
    check_writable_ids([doc.id for doc in docs], format, output)
    predictor = load_predictor(model_dir, max_length, stride, batch_size)
    predicted = list(predictor.predict(docs))
    if processes.is_main():
        write_predictions(predicted, output, format,
                          subtitle=f"{Path(model_dir).name} on {Path(input).name}: ")
    processes.barrier()
    return predicted


def _is_json(path: Path) -> bool:
    """Whether ``path`` holds JSON (an earlier scores file that ``evaluate --output`` may replace)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return True


def evaluate_path(model_dir: str | Path, data: str | Path, format: str | None = None,
                  output: str | Path | None = None, batch_size: int = 32, span_errors: str = "error",
                  html: str | Path | None = None) -> dict:
    """Score the model in ``model_dir`` on the annotated corpus ``data`` (span-level; seqeval view).

    Args:
        model_dir: the export.
        data: the annotated corpus.
        format: its format (detected when None).
        output: a JSON file for the scores (new, or an earlier JSON file: anything else is refused).
        batch_size: windows per batch.
        span_errors: gold spans whose offsets do not fit their annotated string: "error", "skip" or "realign".
        html: also write a page of gold against predicted spans there (``cardioner.view.evaluation_page``).

    Returns:
        The scores (exact match at the top level, ``overlap`` and ``seqeval`` inside).
    """
    check_batch_size(batch_size)
    if output is not None:
        check_output(output, "file", _is_json, "JSON")
    if html is not None:  # before the model runs: only a page cardioner wrote may be replaced
        check_output(html, "file", is_view_page, "a page cardioner wrote")
    docs, report = read_corpus(data, format=format, span_errors=span_errors)
    logger.info("%s", report.summary().replace("\n", "; "))
    if not docs:
        raise CorpusError("no documents", data)
    predictor = load_predictor(model_dir, batch_size=batch_size)
    unknown = sorted({s.label for d in docs for s in d.spans} - set(predictor.labels.types))
    if unknown:
        logger.warning("labels the model does not know (scored as misses): %s", ", ".join(unknown))
    evaluation = predictor.evaluate(predictor.encoder.encode_corpus(docs, "eval"))
    scores = evaluation.scores
    if output is not None and processes.is_main():
        write_text_atomic(output, json.dumps(scores, indent=2), _is_json, "JSON")
    if html is not None and processes.is_main():
        write_text_atomic(html, evaluation_page(docs, evaluation.documents, scores,
                                                subtitle=f"{Path(model_dir).name} on {Path(str(data)).name}"),
                          is_view_page, "a page cardioner wrote")
    processes.barrier()
    return scores


def entity_table(docs: list[Document], limit: int = 30) -> str:
    """A plain-text table of the first ``limit`` predicted entities: document, start, end, label, text, and
    how many more there are; empty for ``limit`` 0 or no entity."""
    rows = [(d.id, s.start, s.end, s.label, d.text[s.start : s.end].replace("\n", " "))
            for d in docs for s in d.spans]
    if limit <= 0 or not rows:
        return ""
    width = max([len("document")] + [len(r[0]) for r in rows[:limit]])
    label_width = max([len("label")] + [len(r[3]) for r in rows[:limit]])
    lines = [f"{'document':<{width}}  {'start':>6}  {'end':>6}  {'label':<{label_width}}  text"]
    lines += [
        f"{d:<{width}}  {s:>6}  {e:>6}  {label:<{label_width}}  {text}"
        for d, s, e, label, text in rows[:limit]
    ]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more")
    return "\n".join(lines)
