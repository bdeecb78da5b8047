"""Documents in, spans out: prediction and evaluation with an exported model, on documents of any length.

``predict_path`` streams: documents are read one at a time (``data.inputs``), predicted a chunk at a time and
written as they come (``data.resumable``), so memory does not grow with the number of documents, a killed run
continues with ``resume=True``, and the output appears only when complete. Every span carries its confidence
(``Span.score``); ``evaluate_path`` says how far those confidences mean what they say (``calibration``), and
``calibrate_path`` fits the export's confidence temperature on dev so that they do.

Under a launcher (``torchrun``, ``accelerate launch``) every process reads the input and loads the model (on
its own GPU, when there are GPUs); the windows' batches are shared out and the predictions gathered
(``Predictor.predict_windows``), so the spans are those of one process; the main process alone writes the
output, the others waiting until it is complete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cardioner import hub, processes
from cardioner.calibration import calibration, fit_on_corpus, scored_documents, span_outcomes
from cardioner.config import ConfigError
from cardioner.data.brat import BRAT_OUTPUT, brat_output_check, check_brat_output
from cardioner.data.common import check_unique_ids, relative_id, write_text_atomic
from cardioner.data.document import CorpusError, Document
from cardioner.data.inputs import JSONL_SUFFIXES, iter_inputs
from cardioner.data.io import check_output_target, read_corpus, write_corpus
from cardioner.data.paths import check_not_input, check_output, id_key, id_problem, walk_corpus_files
from cardioner.data.resumable import ResumableWriter
from cardioner.errors import CardioNERError
from cardioner.export import (
    MODELING_FILE,
    check_outside_exports,
    is_export,
    load_model,
    supports_temperature,
    update_export,
)
from cardioner.plots import plot_reliability
from cardioner.precision import DTYPES, check_quantization, quantize_int8, resolve_dtype
from cardioner.predictor import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_DOCUMENTS, Predictor
from cardioner.values import counted
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
                   batch_size: int = DEFAULT_BATCH_SIZE, dtype: str = "float32",
                   quantize: str = "none") -> Predictor:
    """The Predictor of an export: the installed package's classes, windows as the model was trained unless
    ``max_length`` / ``stride`` say otherwise.

    Args:
        dtype: "auto" (bf16 where the device runs it natively, else fp32: ``precision.resolve_dtype``),
            "float32" or "bfloat16".
        quantize: "none" or "int8" (the linear layers dynamically quantised; CPU, fp32 compute).
    """
    check_quantization(quantize)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir}: not an exported model folder (no config.json)")
    if not is_export(model_dir):
        raise ConfigError(
            f"{model_dir}: not an exported model folder (its config.json {_described_model(model_dir)}, not "
            "a cardioner export; train one with cardioner train)"
        )
    model, tokenizer = load_model(model_dir)
    model.eval()
    if processes.num_processes() > 1:
        model.to(processes.device())  # each process on its own device (the CPU for all of them without GPUs)
    device = next(model.parameters()).device
    compute = resolve_dtype(dtype, device)
    if quantize == "int8":
        if compute != torch.float32:
            raise ConfigError(f"quantize int8 computes in float32; it cannot be combined with dtype {dtype} "
                              f"({compute}); choose one")
        model = quantize_int8(model)
    return Predictor.from_model(model, tokenizer, max_length=max_length, stride=stride, batch_size=batch_size,
                                dtype=compute)


def _described_model(model_dir: Path) -> str:
    """What a non-cardioner config.json is: "describes a 'bert' model", or "is not valid JSON" (damaged)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "is not valid JSON"
    if not isinstance(config, dict):
        return "holds no JSON object"
    return f"describes a {config.get('model_type')!r} model"


def read_inputs(path: str | Path) -> list[Document]:
    """Documents to annotate, all at once: ``data.inputs.iter_inputs`` (a ``.txt`` file, a folder of them,
    recursive, or JSONL with ``id`` and ``text``) read into a list, a repeated JSONL id refused.

    Texts are read exactly as stored (no newline translation, BOM kept), so offsets index the file. In a
    folder, hidden files and folders (a staging folder of an interrupted write, ``.ipynb_checkpoints``) are
    not read and a symbolic link is an error (``data.paths.corpus_files``).
    """
    docs = list(iter_inputs(path))
    if Path(path).suffix in JSONL_SUFFIXES:
        check_unique_ids(docs, path)  # predictions are written per id: a repeated id would overwrite one
    return docs


def check_input_ids(path: str | Path, format: str, output: str | Path) -> int:
    """Raise CorpusError, before any model runs, when an input document's id cannot be written as ``format``
    or two ids would be one output; returns the number of documents. A folder's ids come from its file names
    (no text is read); JSONL is read record by record. Memory: 8 bytes of digest per document."""
    path = Path(path)
    if path.is_dir():
        ids = (relative_id(file, path, ".txt") for file in walk_corpus_files(path) if file.suffix == ".txt")
    else:
        ids = (doc.id for doc in iter_inputs(path))
    seen: set[int] = set()
    count = 0
    for count, doc_id in enumerate(ids, start=1):
        problem = id_problem(doc_id, format)
        if problem is not None:
            raise CorpusError(f"document {count}: id {doc_id!r} {problem}", output)
        key = (id_key(doc_id) if format == "brat" else doc_id).encode("utf-8")
        digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
        if digest in seen:
            raise CorpusError(f"document {count}: id {doc_id!r} repeats an earlier document's id (as "
                              f"{format} output one would overwrite the other)", output)
        seen.add(digest)
    if path.is_dir() and not count:
        raise CorpusError("no .txt files in the folder", path)
    return count


def write_predictions(docs: list[Document], output: str | Path, format: str, subtitle: str = "") -> Path:
    """Write predicted documents as brat (NAME.txt + NAME.ann per document), JSONL, MultiCardioNER TSV or one
    self-contained HTML page (``cardioner.view``; ``subtitle`` is the line under its title)."""
    check_predict_format(format)
    output = Path(output)
    if format == "html":
        total = sum(len(doc.spans) for doc in docs)
        counts = f"{counted(len(docs), 'document')}, {counted(total, 'entity')}"
        page = prediction_page(docs, subtitle=subtitle + counts)
        write_text_atomic(output, page, is_view_page, "a page cardioner wrote")
    else:
        write_corpus(docs, output, format)
    return output


@dataclass
class PredictSummary:
    """What ``predict_path`` did."""

    output: Path  # where the predictions are
    documents: int  # documents in the output (those of an interrupted run included)
    spans: int  # spans in the output
    resumed: int  # documents an interrupted run had written (skipped by this one)
    seconds: float  # this run's prediction time
    dtype: str  # the compute dtype used ("float32", "bfloat16"), "int8" when quantised
    shown: list[Document] = field(default_factory=list)  # the first predicted documents, to show


def predict_path(model_dir: str | Path, input: str | Path, output: str | Path, format: str = "brat",
                 batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None,
                 stride: int | None = None, dtype: str = "auto", quantize: str = "none",
                 min_confidence: float = 0.0, resume: bool = False, score_notes: bool = False,
                 chunk_size: int = DEFAULT_CHUNK_DOCUMENTS, show: int = 0) -> PredictSummary:
    """Annotate ``input`` with the model in ``model_dir`` and write the predictions to ``output``, streaming
    (see the module docstring; the one-page ``html`` format holds every document at once).

    The output and the documents' ids are checked before the model runs: an existing output that is not an
    earlier one of ``format`` is refused (and left as it is), as are ids ``format`` cannot hold. A run
    interrupted before it finished leaves a hidden partial output beside ``output``; ``resume`` continues it
    (same input and settings), and the result is byte for byte that of an uninterrupted run.

    Args:
        dtype, quantize: the compute precision (``load_predictor``).
        min_confidence: leave out spans whose confidence is below this.
        resume: continue an interrupted run's partial output.
        score_notes: brat: also write each span's confidence as an AnnotatorNotes line (JSONL and TSV
            always carry it).
        chunk_size: documents encoded, predicted and committed together (memory holds one chunk).
        show: keep the first documents predicted by this run, up to this many spans, in the summary.
    """
    check_predict_format(format)
    check_batch_size(batch_size)
    check_quantization(quantize)
    if dtype not in DTYPES:  # before the model loads
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if format != "brat":  # brat is written into its input folder on purpose, beside the .txt files
        check_not_input(output, input)
    check_outside_exports(output)
    if format == "html":  # before the model runs: only a page cardioner wrote may be replaced
        if resume:
            raise ConfigError("resume works for brat, jsonl and tsv output; an html page is written at once")
        check_output(output, "file", is_view_page, "a page cardioner wrote")
    elif format == "brat":  # an earlier output (its record) or the input folder; in it, only files we wrote
        check_output(output, "folder", brat_output_check(input), BRAT_OUTPUT)
    else:
        check_output_target(output, format)
    total = check_input_ids(input, format, output)
    if format == "brat":  # every file it would replace is one cardioner wrote (read-only: every process)
        check_brat_output(output, iter_inputs(input))
    predictor = load_predictor(model_dir, max_length, stride, batch_size, dtype, quantize)
    used = "int8" if quantize == "int8" else str(predictor.dtype).removeprefix("torch.")
    start = time.perf_counter()
    main = processes.is_main()  # under a launcher every process predicts; the main process alone writes
    if format == "html":
        docs = list(predictor.predict(iter_inputs(input), chunk_size, min_confidence))
        if main:
            write_predictions(docs, output, format,
                              subtitle=f"{Path(model_dir).name} on {Path(input).name}: ")
        processes.barrier()
        return PredictSummary(Path(output), len(docs), sum(len(d.spans) for d in docs), 0,
                              time.perf_counter() - start, used, docs[:show] if show else [])
    settings = {"model": str(Path(model_dir).resolve()), "input": str(Path(input).resolve()), "dtype": used,
                "min_confidence": min_confidence, "max_length": predictor.encoder.max_length,
                "stride": predictor.encoder.stride, "batch_size": batch_size, "chunk_size": chunk_size}
    writer = (ResumableWriter(output, format, settings, resume=resume, score_notes=score_notes, input=input)
              if main else None)
    resumed, failure = None, None
    if writer is not None:
        try:
            resumed = writer.start()
        except CardioNERError as error:
            failure = error
    resumed = processes.broadcast(resumed)  # the documents an interrupted run wrote: every process skips them
    if failure is not None:
        raise failure
    if resumed is None:
        raise CorpusError("the main process could not take up the output (its error says why)", output)
    inputs = (writer.remaining(iter_inputs(input)) if writer is not None
              else itertools.islice(iter_inputs(input), resumed, None))
    shown: list[Document] = []
    documents = spans = 0
    bar = tqdm(total=total, initial=resumed, desc="predicting", unit="doc", disable=None if main else True,
               smoothing=0.1)
    try:
        for count, doc in enumerate(predictor.predict(inputs, chunk_size, min_confidence), start=1):
            documents, spans = documents + 1, spans + len(doc.spans)
            if sum(len(d.spans) for d in shown) < show:
                shown.append(doc)
            bar.update(1)
            if writer is None:
                continue
            writer.write(doc)
            if count % chunk_size == 0:  # a chunk is complete: durable before the next one is predicted
                writer.commit()
                bar.set_postfix(spans=writer.spans, refresh=False)
        if writer is not None:
            writer.finish()
    finally:
        if writer is not None:
            writer.close()
        bar.close()
    processes.barrier()  # the output is complete before any process goes on
    if writer is not None:
        documents, spans = writer.documents, writer.spans
    else:
        documents, spans = documents + resumed, spans
    return PredictSummary(Path(output), documents, spans, resumed, time.perf_counter() - start, used, shown)


def _is_json(path: Path) -> bool:
    """Whether ``path`` holds JSON (an earlier scores file that ``evaluate --output`` may replace)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return True


def evaluate_path(model_dir: str | Path, data: str | Path, format: str | None = None,
                  output: str | Path | None = None, batch_size: int = 32, span_errors: str = "error",
                  html: str | Path | None = None, reliability: str | Path | None = None,
                  dtype: str = "float32", quantize: str = "none") -> dict:
    """Score the model in ``model_dir`` on the annotated corpus ``data`` (span-level; seqeval view).

    Args:
        model_dir: the export.
        data: the annotated corpus.
        format: its format (detected when None).
        output: a JSON file for the scores (new, or an earlier JSON file: anything else is refused).
        batch_size: windows per batch.
        span_errors: gold spans whose offsets do not fit their annotated string: "error", "skip" or "realign".
        html: also write a page of gold against predicted spans there (``cardioner.view.evaluation_page``).
        reliability: also write the reliability diagram of the span confidences there (PNG).
        dtype, quantize: the compute precision (``load_predictor``).

    Returns:
        The scores (exact match at the top level, ``overlap`` and ``seqeval`` inside), and ``calibration``:
        the expected calibration error of the predicted spans' confidences and its table
        (``calibration.calibration``; a span is correct when it matches a gold span exactly).
    """
    check_batch_size(batch_size)
    for written in (output, html, reliability):
        if written is not None:
            check_not_input(written, data)
            check_outside_exports(written)
    if output is not None:
        check_output(output, "file", _is_json, "JSON")
    if html is not None:  # before the model runs: only a page cardioner wrote may be replaced
        check_output(html, "file", is_view_page, "a page cardioner wrote")
    docs, report = read_corpus(data, format=format, span_errors=span_errors)
    logger.info("%s", report.summary().replace("\n", "; "))
    if not docs:
        raise CorpusError("no documents", data)
    if reliability is not None and Path(reliability).suffix.lower() != ".png":
        raise ConfigError(f"reliability must name a .png file, got {str(reliability)!r}")
    predictor = load_predictor(model_dir, batch_size=batch_size, dtype=dtype, quantize=quantize)
    unknown = sorted({s.label for d in docs for s in d.spans} - set(predictor.labels.types))
    if unknown:
        logger.warning("labels the model does not know (scored as misses): %s", ", ".join(unknown))
    evaluation = predictor.evaluate(predictor.encoder.encode_corpus(docs, "eval"))
    scores = evaluation.scores
    if reliability is not None and processes.is_main():
        plot_reliability(scores["calibration"], reliability,
                         title=f"{Path(model_dir).name} on {Path(str(data)).name}: span confidences")
    if output is not None and processes.is_main():
        write_text_atomic(output, json.dumps(scores, indent=2), _is_json, "JSON")
    if html is not None and processes.is_main():
        write_text_atomic(html, evaluation_page(docs, evaluation.documents, scores,
                                                subtitle=f"{Path(model_dir).name} on {Path(str(data)).name}"),
                          is_view_page, "a page cardioner wrote")
    processes.barrier()
    return scores


def calibrate_path(model_dir: str | Path, data: str | Path, format: str | None = None,
                   output: str | Path | None = None, batch_size: int = 32, span_errors: str = "error",
                   update_modeling: bool = False) -> dict:
    """Fit the confidence temperature of the export in ``model_dir`` on the annotated dev corpus ``data`` and
    write it into the export's config.json (``confidence_temperature``) and the fit into its metrics.json
    (``confidence_temperature``: training's record, ``calibration.TemperatureFit.record``, with the data's
    name, never its path, and the previous temperature and the ECE before and after), both in one crash-safe
    replacement of the folder (``export.update_export``). Spans do not change (nor do the split scores in
    metrics.json and the model card; the split's ``calibration`` entries stay those of the temperature they
    were measured at); their confidences do, wherever the export is used (predict, evaluate, serve, the stock
    pipeline's scores, scripts/viterbi_predict.py).

    One forward pass keeps the words' scores; T minimises the NLL of the gold tags of the dev words
    (``calibration.fit_temperature``), and the span confidences are measured before and after on the same
    documents (optimistic: fitted and measured on one corpus; see docs/benchmarks.md for a held-out check).

    Args:
        model_dir: the export (changed in place).
        data: the annotated dev corpus (never test: the temperature is a fitted parameter).
        format: its format (detected when None).
        output: also write the report as JSON there.
        batch_size: windows per batch.
        span_errors: gold spans whose offsets do not fit their annotated string: "error", "skip", "realign".
        update_modeling: an export whose modeling.py predates confidence temperatures gets the installed one
            (else it is refused: loaded with trust_remote_code, it would ignore the temperature).

    Returns:
        {"temperature", "previous_temperature", "nll_before", "nll_after", "words", "at_bound", "data",
        "documents", "before", "after"}: NLLs per word (word-channel) at T = 1 and at the fitted T;
        before/after: the calibration of the span confidences at the export's previous temperature and at
        the fitted one.
    """
    check_batch_size(batch_size)
    if output is not None:
        check_not_input(output, data)
        check_outside_exports(output)
        check_output(output, "file", _is_json, "JSON")
    model_dir = Path(model_dir)
    if not is_export(model_dir):
        raise ConfigError(f"{model_dir}: not an exported model folder (no config.json of a cardioner export)")
    if not update_modeling and not supports_temperature(model_dir):
        raise ConfigError(f"update_modeling is off, and {model_dir / MODELING_FILE} predates confidence "
                          "temperatures: loaded with trust_remote_code it would ignore the fitted "
                          "temperature; turn it on to replace it with the installed modeling.py (the weights "
                          "are unchanged)")
    docs, report = read_corpus(data, format=format, span_errors=span_errors)
    logger.info("%s", report.summary().replace("\n", "; "))
    if not docs:
        raise CorpusError("no documents", data)
    if not any(doc.spans for doc in docs):
        raise CorpusError("no annotated spans: a temperature is fitted on the gold tags of annotated dev "
                          "documents", data)
    predictor = load_predictor(model_dir, batch_size=batch_size)
    previous = predictor.model.config.confidence_temperature
    corpus = predictor.encoder.encode_corpus(docs, "dev")
    fit, windows = fit_on_corpus(predictor, corpus)
    decoder = predictor.model.decoder
    if fit.at_bound:
        logger.warning("the fitted temperature %.3g lies at the end of the range searched: the scores are "
                       "far from calibrated", fit.temperature)

    def measured(temperature: float) -> dict:
        scored = scored_documents(decoder, predictor.encoder, corpus, windows, temperature)
        figures = calibration(span_outcomes(docs, scored))
        return {key: value for key, value in figures.items() if key != "bins"}

    result = {**fit.as_dict(), "previous_temperature": previous, "data": str(data), "documents": len(docs),
              "before": measured(previous), "after": measured(fit.temperature)}
    recorded = {**fit.record(hub.data_name(data) if isinstance(data, (str, Path)) else None, len(docs)),
                "previous_temperature": previous, "ece_before": result["before"]["ece"],
                "ece_after": result["after"]["ece"]}
    if processes.is_main():
        update_export(model_dir, {"confidence_temperature": fit.temperature}, update_modeling,
                      metrics_changes={"confidence_temperature": recorded})
        if output is not None:
            write_text_atomic(output, json.dumps(result, indent=2), _is_json, "JSON")
    processes.barrier()
    return result


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
