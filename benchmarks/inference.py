"""Prediction at collection scale: ``cardioner predict`` against the stock pipeline and the machine's limit.

One command, one run, one export. Every system annotates the same documents (MEDDOCAN test: 250 whole
documents by default) with the same exported model, each in its own process, one after another:

- ``cardioner predict`` in float32 at each window overlap of ``--cardioner-strides`` (the export's own and
  64 by default), with ``--quantize int8`` and in bfloat16 (``--dtype bfloat16``; on a CPU without native
  bf16 it is emulated and very slow, so it runs on the first ``--bf16-documents`` documents, beside a float32
  run on the same documents);
- ``scripts/viterbi_predict.py`` (the standalone script: torch + transformers only);
- the stock ``pipeline("token-classification", model=export, trust_remote_code=True, stride=64,
  aggregation_strategy="simple")`` (the issue's hand measurement; ``--pipeline-stride``) at its default batch
  size (1) and at the best of ``--pipeline-batch-sizes`` (probed first on ``--probe-documents`` documents),
  under this interpreter and under every ``--pipeline-python`` given (e.g. a transformers 4.x venv: the
  pipeline's child imports only torch and transformers).

For each: documents/s and subwords/s of the whole process (start-up and model loading included), documents
per CPU second of the whole process (user + system time from ``wait4``: with one thread, what the process
itself ran, the figure that the machine's other jobs disturb least), documents/s of prediction alone where
the system reports it (cardioner predict's own timing; the pipeline's call), peak
RSS (``wait4`` of the child process), span F1 against gold (exact match, micro), and for cardioner's rows the
expected calibration error of its span confidences. Then the forward pass alone (no reading, tokenising or
writing) is timed in float32, int8 and bf16, its FLOPs counted from the window lengths and the backbone's
shape, and the achieved FLOP/s set against the matmul peak of the same dtype measured in the same run (best of
a 2048x2048 fp32 matmul; for bf16 the better of a 1024x1024 matmul of bf16 tensors and a 1024x1024 linear
layer under bf16 autocast, the way predict runs bf16; a 2048x2048 int8 dynamic-quantised linear layer;
measured before and after the systems run). Prints one JSON object; ``--table`` also prints the rows as a
Markdown table.

The default model, /work/artifacts/meddocan/linear-2ep, was trained by cardioner on MEDDOCAN train (500
documents, no dev set: MEDDOCAN dev has a label train lacks) with the default backbone (all-MiniLM-L6-v2), a
linear head with constrained (BIO Viterbi) decoding, 2 epochs, batch 16, lr 5e-5, seed 42, 512-subword windows
with stride 128 — ``cardioner train --train meddocan/train --test meddocan/test --model default --head linear
--epochs 2 --batch-size 16 --lr 5e-5 --seed 42 --output linear-2ep`` (test F1 0.763) — and is only read here:

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/inference.py --documents 100 --bf16-documents 4 \\
        --probe-documents 8 --pipeline-batch-sizes 1,8 --threads 1 --skip script \\
        --pipeline-python /work/artifacts/issue-16-model/tf4/bin/python \\
        --workdir /tmp/inference-bench --table > inference.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's cardioner, for the children run from here
DEFAULT_MODEL = "/work/artifacts/meddocan/linear-2ep"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "meddocan" / "test"


# --------------------------------------------------------------------------------------------- children
def child_peaks(spec: dict) -> dict:
    """Best-of-N matmul throughput (GFLOP/s) in fp32, bf16 and int8 (a dynamic-quantised linear layer), by
    the wall clock and (under "cpu") by the process's CPU time (with one thread: what the core did while the
    process had it)."""
    import torch

    from cardioner.precision import quantize_int8

    def best(run, repeats: int) -> tuple[float, float]:
        run()
        wall, cpu = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            run()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
        return min(wall), min(cpu)

    result: dict = {"threads": torch.get_num_threads()}
    cpu: dict = {}

    def record(name: str, flops: float, seconds: tuple[float, float]) -> None:
        result[name], cpu[name] = flops / seconds[0] / 1e9, flops / seconds[1] / 1e9

    for name, dtype, size, repeats in (("float32", torch.float32, 2048, 5),
                                       ("bfloat16_tensors", torch.bfloat16, 1024, 2)):
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        record(name, 2 * size**3, best(lambda a=a, b=b: a @ b, repeats))
    # bf16 as predict runs it: fp32 tensors through autocast (oneDNN kernels where torch has them)
    x, w = torch.randn(1024, 1024), torch.randn(1024, 1024)

    def autocast_linear() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.linear(x, w)

    record("bfloat16_autocast", 2 * 1024**3, best(autocast_linear, 3))
    for found in (result, cpu):
        found["bfloat16"] = max(found["bfloat16_tensors"], found["bfloat16_autocast"])
    layer = quantize_int8(torch.nn.Sequential(torch.nn.Linear(2048, 2048, bias=False)))
    inputs = torch.randn(2048, 2048)
    with torch.no_grad():
        record("int8", 2 * 2048**3, best(lambda: layer(inputs), 5))
    return {**result, "cpu": cpu}


def forward_flops(config, lengths: list[int], num_labels: int) -> float:
    """FLOPs of the encoder forward (and the linear head) on windows of these lengths: per layer and token
    2 x (4 h^2 + 2 h f) for the projections and feed-forward, plus 4 L h for the attention scores and the
    weighted sum (L: the window's length); multiply-adds count 2. Embeddings, norms and softmax are left
    out."""
    hidden, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_token = layers * 2 * (4 * hidden * hidden + 2 * hidden * ff) + 2 * hidden * num_labels
    return float(sum(length * (per_token + layers * 4 * length * hidden) for length in lengths))


def child_forward(spec: dict) -> dict:
    """The forward pass alone over every window of the documents, in ``spec["dtype"]`` / ``spec["quantize"]``:
    seconds and FLOP/s (batches of ``batch_size`` windows, sorted by length as ``predict`` sorts them)."""
    import torch

    from cardioner.inference import load_predictor
    from cardioner.precision import compute_dtype, quantize_int8

    predictor = load_predictor(spec["model"], stride=spec.get("stride"))
    model = predictor.model
    docs = [_document(record) for record in _records(spec["input"])]
    encoded, _ = predictor.encoder.encode(docs)
    windows = sorted((w for doc in encoded for w in doc.windows), key=lambda w: len(w["input_ids"]))
    if spec["quantize"] == "int8":
        model = quantize_int8(model)
    dtype = getattr(torch, spec["dtype"])
    batch_size = spec["batch_size"]
    batches = [predictor.collate(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
    seconds = cpu_seconds = 0.0
    with torch.no_grad(), compute_dtype(dtype, "cpu"):
        for batch in batches:
            start, cpu_start = time.perf_counter(), time.process_time()
            model(**batch)
            seconds += time.perf_counter() - start
            cpu_seconds += time.process_time() - cpu_start
    config = model.config.backbone_config
    backbone = type("Shape", (), {key: config[key] for key in ("hidden_size", "intermediate_size",
                                                               "num_hidden_layers")})
    flops = forward_flops(backbone, [len(w["input_ids"]) for w in windows], model.config.num_labels)
    padded = sum(batch["input_ids"].numel() for batch in batches)
    return {"windows": len(windows), "batches": len(batches), "stride": predictor.encoder.stride,
            "window_tokens": sum(len(w["input_ids"]) for w in windows),
            "padded_tokens": padded, "seconds": seconds, "cpu_seconds": cpu_seconds, "flops": flops,
            "gflops_per_s": flops / seconds / 1e9, "gflops_per_cpu_s": flops / cpu_seconds / 1e9}


def child_pipeline(spec: dict) -> dict:
    """The stock pipeline over the documents; spans per document written to ``spec["output"]`` as JSONL.
    Runs under any interpreter with torch and transformers (``--pipeline-python``): it imports no cardioner.
    The tokenizer is loaded and handed over: transformers 4.x's ``pipeline`` loads none for a model whose
    config class it does not know (``CardioNERConfig``) and then fails on ``stride``."""
    import torch
    import transformers
    from transformers import AutoTokenizer, pipeline

    torch.set_grad_enabled(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        ner = pipeline("token-classification", model=spec["model"], tokenizer=tokenizer,
                       trust_remote_code=True, stride=spec["stride"], aggregation_strategy="simple",
                       device=-1)
    records = list(_records(spec["input"]))
    options = {} if spec["batch_size"] is None else {"batch_size": spec["batch_size"]}  # None: its default
    start, cpu_start = time.perf_counter(), time.process_time()
    results = ner([record["text"] for record in records], **options)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    with open(spec["output"], "w", encoding="utf-8") as handle:
        for record, entities in zip(records, results, strict=True):
            spans = [{"start": int(e["start"]), "end": int(e["end"]), "label": e["entity_group"],
                      "score": float(e["score"])} for e in entities]
            handle.write(json.dumps({"id": record["id"], "text": record["text"], "spans": spans}) + "\n")
    return {"seconds_in_pipeline": seconds, "cpu_seconds_in_pipeline": cpu_seconds,
            "transformers": transformers.__version__,
            "torch": torch.__version__, "default_batch_size": getattr(ner, "_batch_size", None) or 1}


CHILDREN = {"peaks": child_peaks, "forward": child_forward, "pipeline": child_pipeline}


def _records(path: str):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _document(record: dict):
    from cardioner.data.document import Document

    return Document(record["id"], record["text"], [])


# --------------------------------------------------------------------------------------------- the parent
def run_process(command: list[str], log: Path) -> dict:
    """Run ``command`` with the checkout's cardioner; wall seconds, CPU seconds (user + system: what the
    process itself ran, whatever else shares the machine), peak RSS (MiB) and exit code."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w", encoding="utf-8") as handle:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise SystemExit(f"{' '.join(command[:4])}... failed ({code}); log {log}:\n{tail}")
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024}


def run_child(kind: str, spec: dict, workdir: Path, name: str, python: str = sys.executable
              ) -> tuple[dict, dict]:
    """This file's ``--child KIND`` under ``python``: its result and its process's wall time and peak RSS."""
    spec_path = workdir / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    out_path = workdir / f"{name}.result.json"
    process = run_process([python, __file__, "--child", kind, str(spec_path), str(out_path)],
                          workdir / f"{name}.log")
    return json.loads(out_path.read_text(encoding="utf-8")), process


def read_spans(path: Path) -> list:
    from cardioner.data.jsonl import read_jsonl

    return read_jsonl(path)


def scores(gold: list, predicted: list) -> dict:
    """Exact-match micro P/R/F1 of ``predicted`` against ``gold`` (the documents ``predicted`` holds), and the
    calibration of the predicted spans' scores when they have them."""
    from cardioner.calibration import calibration, span_outcomes
    from cardioner.evaluation import score_spans

    ids = {doc.id for doc in predicted}
    gold = [doc for doc in gold if doc.id in ids]
    micro = score_spans(gold, predicted, match="exact")["micro"]
    result = {"f1": micro["f1"], "precision": micro["precision"], "recall": micro["recall"],
              "predicted_spans": sum(len(doc.spans) for doc in predicted)}
    outcomes = span_outcomes(gold, predicted)
    if outcomes:
        result["ece"] = calibration(outcomes)["ece"]
    return result


def write_input(docs: list, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({"id": doc.id, "text": doc.text}, ensure_ascii=False) + "\n")


def count_subwords(model: str, docs: list) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=True)  # its config names modeling.py
    return sum(len(tokenizer(doc.text, add_special_tokens=False, verbose=False)["input_ids"]) for doc in docs)


def row(name: str, process: dict, documents: int, subwords: int, quality: dict,
        seconds_predicting: float | None = None, **extra) -> dict:
    """One system's row: wall-clock rates of its whole process (start-up and model loading included), its
    documents per CPU second (the figure the machine's other jobs disturb least) and, where the system reports
    it, the rate of prediction alone (reading, predicting, writing)."""
    inner = {} if seconds_predicting is None else {
        "seconds_predicting": round(seconds_predicting, 2),
        "documents_per_s_predicting": documents / seconds_predicting}
    return {"system": name, "documents": documents, "seconds": round(process["seconds"], 2),
            "documents_per_s": documents / process["seconds"],
            "subwords_per_s": subwords / process["seconds"], "cpu_seconds": round(process["cpu_seconds"], 2),
            "documents_per_cpu_s": documents / process["cpu_seconds"], **inner,
            "peak_rss_mib": round(process["peak_rss_mib"], 1), **quality, **extra}


def predicting_seconds(log: Path) -> float | None:
    """The seconds ``cardioner predict`` reports for its documents (its last line), model loading excluded."""
    found = re.findall(r"documents in ([0-9.]+) s \(", log.read_text(encoding="utf-8", errors="replace"))
    return float(found[-1]) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the export (see above for how the default "
                        "one was trained; any cardioner export works)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="annotated documents (MEDDOCAN test brat)")
    parser.add_argument("--documents", type=int, default=0, help="use the first N documents (0: all)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cardioner-inference-bench"))
    parser.add_argument("--batch-size", type=int, default=32, help="windows per batch for cardioner and the "
                        "script")
    parser.add_argument("--pipeline-batch-sizes", default="1,4,16",
                        help="batch sizes probed for the pipeline")
    parser.add_argument("--probe-documents", type=int, default=8,
                        help="documents of the pipeline's probe runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of every run (OMP_NUM_THREADS; "
                        "0: torch's default)")
    parser.add_argument("--bf16-documents", type=int, default=8, help="documents of the bf16 rows (emulated "
                        "bf16 is slow)")
    parser.add_argument("--pipeline-stride", type=int, default=64, help="the pipeline's stride (64: the "
                        "issue's hand measurement; the export's own is 128)")
    parser.add_argument("--pipeline-python", action="append", default=[], metavar="[LABEL=]PYTHON",
                        help="run the pipeline under this interpreter too (torch + transformers, e.g. a "
                        "transformers 4.x venv); repeat for several; the running one is always first")
    parser.add_argument("--cardioner-strides", default="export,64", help="window overlaps of the float32 "
                        "cardioner predict rows (export: the export's own)")
    parser.add_argument("--skip", default="", help="comma-separated systems to leave out: pipeline, script, "
                        "int8, bf16, forward")
    parser.add_argument("--table", action="store_true", help="also print a Markdown table on stderr")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, spec_path, out_path = args.child
        result = CHILDREN[kind](json.loads(Path(spec_path).read_text(encoding="utf-8")))
        Path(out_path).write_text(json.dumps(result), encoding="utf-8")
        return
    from cardioner.data.io import read_corpus
    from cardioner.precision import native_bf16

    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    skip = set(filter(None, args.skip.split(",")))
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    gold, _ = read_corpus(args.data)
    gold = sorted(gold, key=lambda doc: doc.id)
    if args.documents:
        gold = gold[: args.documents]
    subset = gold[: args.bf16_documents]
    all_input, subset_input = workdir / "documents.jsonl", workdir / "subset.jsonl"
    write_input(gold, all_input)
    write_input(subset, subset_input)
    subwords = count_subwords(args.model, gold)
    subset_subwords = count_subwords(args.model, subset)
    config = json.loads((Path(args.model) / "config.json").read_text(encoding="utf-8"))
    result: dict = {"model": str(args.model), "data": str(args.data), "documents": len(gold),
                    "subwords": subwords,
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "threads": args.threads, "native_bf16": native_bf16("cpu")[0],
                                "bf16_check": native_bf16("cpu")[1]},
                    "rows": []}
    peaks_before, _ = run_child("peaks", {}, workdir, "peaks-before")
    export_stride = (config.get("cardioner_windows") or {}).get("stride")
    cardioner_runs = []
    for stride in args.cardioner_strides.split(","):
        stride = None if stride == "export" else int(stride)
        name = "cardioner predict (float32)" if stride is None else f"cardioner predict --stride {stride}"
        cardioner_runs.append((name, "float32", "none", all_input, len(gold), subwords, stride))
    if "int8" not in skip:
        cardioner_runs.append(("cardioner predict --quantize int8", "float32", "int8", all_input, len(gold),
                               subwords, None))
    if "bf16" not in skip:
        cardioner_runs += [
            (f"cardioner predict (float32), first {len(subset)} documents", "float32", "none", subset_input,
             len(subset), subset_subwords, None),
            (f"cardioner predict --dtype bfloat16, first {len(subset)} documents", "bfloat16", "none",
             subset_input, len(subset), subset_subwords, None),
        ]
    for index, (name, dtype, quantize, input_path, count, words, stride) in enumerate(cardioner_runs):
        output = workdir / f"cardioner-{index}.jsonl"
        output.unlink(missing_ok=True)
        command = [sys.executable, "-m", "cardioner", "predict", "--model", str(args.model), "--input",
                   str(input_path), "--output", str(output), "--format", "jsonl", "--batch-size",
                   str(args.batch_size), "--dtype", dtype, "--quantize", quantize, "--show", "0"]
        command += [] if stride is None else ["--stride", str(stride)]
        process = run_process(command, workdir / f"cardioner-{index}.log")
        docs = gold if input_path == all_input else subset
        result["rows"].append(row(name, process, count, words, scores(docs, read_spans(output)),
                                  predicting_seconds(workdir / f"cardioner-{index}.log"), dtype=dtype,
                                  quantize=quantize, stride=stride or export_stride))
        print(f"{name}: {result['rows'][-1]}", file=sys.stderr)
    if "script" not in skip:
        output = workdir / "script.jsonl"
        output.unlink(missing_ok=True)
        command = [sys.executable, str(REPO / "scripts" / "viterbi_predict.py"), "--model", str(args.model),
                   "--input", str(all_input), "--output", str(output), "--format", "jsonl", "--batch-size",
                   str(args.batch_size), "--device", "cpu"]
        process = run_process(command, workdir / "script.log")
        result["rows"].append(row("scripts/viterbi_predict.py", process, len(gold), subwords,
                                  scores(gold, read_spans(output)), dtype="float32", quantize="none",
                                  stride=export_stride))
        print(f"script: {result['rows'][-1]}", file=sys.stderr)
    if "pipeline" not in skip:
        result["pipeline_probe_seconds"] = {}
        for label, python in pipeline_interpreters(args.pipeline_python):
            run_pipelines(args, label, python, gold, subwords, all_input, workdir, result)
    if "forward" not in skip:
        result["forward"] = []
        # float32 at every overlap of the cardioner rows, int8, and bf16 beside float32 on the subset
        forward_runs = [("float32", "none", all_input, None if stride == "export" else int(stride))
                        for stride in args.cardioner_strides.split(",")]
        forward_runs += [] if "int8" in skip else [("float32", "int8", all_input, None)]
        forward_runs += [] if "bf16" in skip else [("float32", "none", subset_input, None),
                                                   ("bfloat16", "none", subset_input, None)]
        for dtype, quantize, input_path, stride in forward_runs:
            spec = {"model": str(args.model), "input": str(input_path), "dtype": dtype, "quantize": quantize,
                    "batch_size": args.batch_size, "stride": stride}
            name = f"forward-{dtype}-{quantize}-{input_path.stem}-{stride or 'export'}"
            inner, process = run_child("forward", spec, workdir, name)
            result["forward"].append({"dtype": dtype, "quantize": quantize, "documents": input_path.stem,
                                      **inner,
                                      "peak_rss_mib": round(process["peak_rss_mib"], 1)})
            print(f"{name}: {result['forward'][-1]}", file=sys.stderr)
    peaks_after, _ = run_child("peaks", {}, workdir, "peaks-after")
    keys = ("float32", "bfloat16", "int8")
    peaks = {key: max(peaks_before[key], peaks_after[key]) for key in keys}
    cpu_peaks = {key: max(peaks_before["cpu"][key], peaks_after["cpu"][key]) for key in keys}
    result["matmul_peak_gflops_per_s"] = {"before": peaks_before, "after": peaks_after, "best": peaks,
                                          "best_per_cpu_s": cpu_peaks}
    for entry in result.get("forward", []):
        peak_key = "int8" if entry["quantize"] == "int8" else entry["dtype"]
        entry["fraction_of_peak"] = entry["gflops_per_s"] / peaks[peak_key]
        entry["fraction_of_peak_per_cpu_s"] = entry["gflops_per_cpu_s"] / cpu_peaks[peak_key]
        entry["peak_used"] = peak_key
    rows = result["rows"]
    reference = next(r for r in rows if r["system"] == "cardioner predict (float32)")
    for entry in rows:
        entry["speed_vs_cardioner_fp32"] = entry["documents_per_s"] / reference["documents_per_s"]
    result["cardioner_vs_pipeline"] = [
        {"cardioner": ours["system"], "pipeline": stock["system"],
         "documents_per_s_ratio": ours["documents_per_s"] / stock["documents_per_s"],
         "documents_per_cpu_s_ratio": ours["documents_per_cpu_s"] / stock["documents_per_cpu_s"],
         "documents_per_s_predicting_ratio": ours["documents_per_s_predicting"]
         / stock["documents_per_s_predicting"],
         "f1_difference": ours["f1"] - stock["f1"]}
        for ours in rows if ours["system"].startswith("cardioner predict") and ours["documents"] == len(gold)
        and ours["quantize"] == "none" and "documents_per_s_predicting" in ours
        for stock in rows if stock["system"].startswith("pipeline")]
    result["default_dtype"] = default_dtype(result)
    print(json.dumps(result, indent=2))
    if args.table:
        print(markdown(result), file=sys.stderr)


def pipeline_interpreters(specs: list[str]) -> list[tuple[str, str]]:
    """(label, interpreter) of every pipeline run: this one first, then each ``[LABEL=]PYTHON`` given (the
    label defaults to the transformers version the interpreter imports)."""
    found = [("", sys.executable)]
    for spec in specs:
        label, _, python = spec.rpartition("=")
        if not Path(python).is_file():
            raise SystemExit(f"--pipeline-python {spec}: no interpreter at {python}")
        found.append((label, python))
    return found


def run_pipelines(args, label: str, python: str, gold: list, subwords: int, all_input: Path, workdir: Path,
                  result: dict) -> None:
    """The stock pipeline under ``python``: its batch sizes probed on the first documents, then every
    document at its default batch size and, if another probed faster, at that one too (rows added to
    ``result``)."""
    stride = args.pipeline_stride
    tag = f"pipeline-{len(result['pipeline_probe_seconds'])}"
    probe_input = workdir / "probe.jsonl"
    write_input(gold[: args.probe_documents], probe_input)
    probes, version = {}, None
    for batch_size in [int(b) for b in args.pipeline_batch_sizes.split(",")]:
        spec = {"model": str(args.model), "input": str(probe_input), "stride": stride,
                "batch_size": batch_size, "output": str(workdir / f"{tag}-probe-{batch_size}.jsonl")}
        inner, _ = run_child("pipeline", spec, workdir, f"{tag}-probe-{batch_size}", python)
        probes[batch_size], version = inner["seconds_in_pipeline"], inner["transformers"]
        print(f"{tag} (transformers {version}) probe batch {batch_size}: {probes[batch_size]:.1f} s",
              file=sys.stderr)
    label = label or f"transformers {version}"
    result["pipeline_probe_seconds"][label] = probes
    best = min(probes, key=probes.get)
    for batch_size in dict.fromkeys([None, best if best != 1 else None]):  # the default batch size is 1
        output = workdir / f"{tag}-{batch_size or 'default'}.jsonl"
        spec = {"model": str(args.model), "input": str(all_input), "stride": stride, "batch_size": batch_size,
                "output": str(output)}
        inner, process = run_child("pipeline", spec, workdir, output.stem, python)
        batch = f"batch {batch_size} (best probed)" if batch_size else "default batch (1)"
        result["rows"].append(row(f'pipeline("token-classification", stride={stride}, aggregation_strategy='
                                  f'"simple"), {label}, {batch}', process, len(gold), subwords,
                                  scores(gold, read_spans(output)), inner["seconds_in_pipeline"],
                                  dtype="float32", quantize="none", batch_size=batch_size or 1, stride=stride,
                                  transformers=inner["transformers"], python=python))
        print(f"{tag}: {result['rows'][-1]}", file=sys.stderr)


def default_dtype(result: dict) -> dict:
    """What ``--dtype auto`` should choose, read from the table: the fastest of float32, int8 and bf16 whose
    F1 is within half a point of float32's on the same documents, next to what ``auto`` resolves to here."""
    from cardioner.precision import resolve_dtype

    rows = result["rows"]
    full = next(r for r in rows if r["system"] == "cardioner predict (float32)")
    candidates = [("float32", full, full)]
    int8 = next((r for r in rows if "int8" in r["system"]), None)
    if int8 is not None:
        candidates.append(("int8", int8, full))
    bf16 = next((r for r in rows if "bfloat16" in r["system"]), None)
    subset_fp32 = next((r for r in rows if r["system"].startswith("cardioner predict (float32), first")),
                       None)
    if bf16 is not None and subset_fp32 is not None:
        candidates.append(("bfloat16", bf16, subset_fp32))
    table = {name: {"speed_vs_float32": row["documents_per_s"] / reference["documents_per_s"],
                    "f1_difference": row["f1"] - reference["f1"]} for name, row, reference in candidates}
    within = [name for name, entry in table.items() if entry["f1_difference"] >= -0.005]
    best = max(within, key=lambda name: table[name]["speed_vs_float32"])
    return {"candidates": table, "fastest_within_half_a_point": best,
            "auto_resolves_to": str(resolve_dtype("auto", "cpu")).removeprefix("torch.")}


def markdown(result: dict) -> str:
    lines = ["| system | documents | docs/s (process) | docs/s (predicting) | docs per CPU-s (process) | "
             "subwords/s (process) | peak RSS (MiB) | span F1 | ECE |", "|" + "---|" * 9]
    for r in result["rows"]:
        ece = f"{r['ece']:.3f}" if r.get("ece") is not None else "–"
        inner = f"{r['documents_per_s_predicting']:.2f}" if "documents_per_s_predicting" in r else "–"
        lines.append(f"| {r['system']} | {r['documents']} | {r['documents_per_s']:.2f} | {inner} | "
                     f"{r['documents_per_cpu_s']:.2f} | "
                     f"{r['subwords_per_s']:.0f} | {r['peak_rss_mib']:.0f} | {100 * r['f1']:.2f} | {ece} |")
    for ratio in result.get("cardioner_vs_pipeline", []):
        lines.append(f"\n{ratio['cardioner']} / {ratio['pipeline']}: "
                     f"{ratio['documents_per_s_ratio']:.2f}x (process), "
                     f"{ratio['documents_per_cpu_s_ratio']:.2f}x (per CPU second), "
                     f"{ratio['documents_per_s_predicting_ratio']:.2f}x (predicting), "
                     f"F1 {100 * ratio['f1_difference']:+.2f}")
    for entry in result.get("forward", []):
        lines.append(f"\nforward {entry['dtype']}/{entry['quantize']} ({entry['documents']}, "
                     f"stride {entry['stride']}): {entry['batches']} batches, "
                     f"{entry['window_tokens']} window tokens, {entry['padded_tokens']} padded, "
                     f"{entry['seconds']:.1f} s ({entry['cpu_seconds']:.1f} CPU s), "
                     f"{entry['gflops_per_s']:.1f} GFLOP/s = {100 * entry['fraction_of_peak']:.0f}% of the "
                     f"{entry['peak_used']} peak; per CPU second {entry['gflops_per_cpu_s']:.1f} GFLOP/s = "
                     f"{100 * entry['fraction_of_peak_per_cpu_s']:.0f}% of the "
                     f"{entry['peak_used']} peak")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
