"""Training throughput on 1 and on 2 processes (``torchrun --nproc_per_node N``; gloo on CPU, nccl on GPUs).

The same run each time: NCBI-disease training sentences, the same backbone, window size, global batch
(``training.batch_size`` is split between the processes), epochs and seed, in several layouts
``PROCESSESxTHREADS`` (``--layouts 1x1,1x2,2x1``: one process on one thread, one process on two threads, two
processes on one thread each), so the figures say whether two processes use the same cores better than one
process with as many threads does. Throughput is windows per second over
the training steps (``TrainResult.train_samples_per_second``: evaluation and the export excluded); rounds
alternate the layouts so that load from other jobs falls on all of them. With ``--device cuda`` each process
takes one GPU (and ``--mixed-precision bf16`` is passed on). Prints one JSON object; never asserts timings.

    python benchmarks/scaling.py --train-limit 400 --rounds 2 > scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ncbi_disease" / "conll"


def worker(args) -> None:
    """One training run in this process (one of several under torchrun); the main one writes the figures."""
    import torch

    from cardioner import processes
    from cardioner.config import load_config
    from cardioner.data import read_corpus
    from cardioner.training import ModelTrainer

    torch.set_num_threads(args.threads)
    train_docs, _ = read_corpus(DATA / "train.tsv")
    train_docs = train_docs[: args.train_limit] if args.train_limit else train_docs
    config = load_config(None, {
        "model.model": args.model, "training.epochs": args.epochs, "training.batch_size": args.batch_size,
        "training.lr": 5e-5, "training.seed": args.seed, "data.max_length": args.max_length,
        "training.patience": 0, "training.mixed_precision": args.mixed_precision,
    })
    started = time.perf_counter()
    result = ModelTrainer(config).train(train_docs, None, None)
    if processes.is_main():
        figures = {"processes": processes.num_processes(), "threads_per_process": torch.get_num_threads(),
                   "device": str(processes.device()),
                   "windows_per_second": round(result.train_samples_per_second, 2),
                   "optimizer_steps": result.history[-1]["global_step"],
                   "train_seconds": round(result.train_seconds, 2),
                   "wall_seconds": round(time.perf_counter() - started, 2),
                   "final_train_loss": round(result.history[-1]["train_loss"], 5)}
        Path(args.out).write_text(json.dumps(figures), encoding="utf-8")
    processes.barrier()


def launch(args, count: int, threads: int, out: Path) -> dict:
    """Run the worker on ``count`` processes of ``threads`` threads each; its figures."""
    script = [str(Path(__file__).resolve()), "--worker", "--out", str(out), "--threads", str(threads)] + [
        item for key in ("model", "train_limit", "epochs", "batch_size", "max_length", "seed",
                         "mixed_precision")
        for item in (f"--{key.replace('_', '-')}", str(getattr(args, key)))]
    command = [sys.executable, *script] if count == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={count}", *script]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads)}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{count} process(es) failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="backbone (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--train-limit", type=int, default=400, help="training sentences (0 = all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch (split up)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--layouts", default="1x1,1x2,2x1", help="PROCESSESxTHREADS to compare")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of every layout")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
    runs: dict[str, list[dict]] = {f"{count}x{threads}": [] for count, threads in layouts}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for count, threads in layouts:
                name = f"{count}x{threads}"
                figures = launch(args, count, threads, Path(scratch) / f"{name}-{round_index}.json")
                runs[name].append(figures)
                rate = figures["windows_per_second"]
                print(f"round {round_index + 1}, {name}: {rate} windows/s", file=sys.stderr)
    rates = {name: [run["windows_per_second"] for run in rows] for name, rows in runs.items()}
    base = statistics.median(rates[next(iter(rates))])
    print(json.dumps({
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "out", "threads")},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_average": os.getloadavg()},
        "runs": runs,
        "median_windows_per_second": {name: statistics.median(r) for name, r in rates.items()},
        "ratio_to_first_layout": {name: round(statistics.median(r) / base, 3) for name, r in rates.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
