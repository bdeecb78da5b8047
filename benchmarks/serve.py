"""Latency and throughput of ``cardioner serve`` at 1 and 8 concurrent clients; prints JSON.

Starts the real server (``python -m cardioner serve``) on a free localhost port for each batching setting,
sends the same requests (one text each: the sentences of the NCBI sample's test abstracts, by default) from 1
and from 8 client threads over HTTP, and reports per-request latency (median, p95) and throughput. The
comparison is within one run: the same model, texts and machine, so the ratios (8 clients against 1; batching
window against none) mean more than the absolute figures on a shared machine.

    python benchmarks/serve.py --model models/ncbi --requests 200 --wait-ms 0,5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's cardioner, for the direct runs

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample" / "test"


def sentences(folder: Path) -> list[str]:
    """The sentences of the abstracts in ``folder`` (split at '. '), each ending with its full stop."""
    texts = []
    for path in sorted(folder.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            texts += [s.strip().rstrip(".") + "." for s in line.split(". ") if len(s.split()) >= 4]
    return texts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, wait_ms: float, threads: int, batch_size: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "cardioner", "serve", "--model", str(model), "--port", str(port),
               "--max-wait-ms", str(wait_ms), "--threads", str(threads), "--batch-size", str(batch_size)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start in 300 s")


def load(url: str, texts: list[str], clients: int) -> dict:
    """Send one request per text from ``clients`` threads (each keeps its connection open, as a service's
    callers do); latency per request and overall throughput."""
    local = threading.local()

    def send(text: str) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=600)
        start = time.perf_counter()
        response = local.client.post(f"{url}/predict", json={"texts": [text]})
        response.raise_for_status()
        return time.perf_counter() - start, len(response.json()["documents"][0]["spans"])

    before = httpx.get(f"{url}/info").json()["serving"]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(send, texts))
    elapsed = time.perf_counter() - start
    after = httpx.get(f"{url}/info").json()["serving"]
    latencies = sorted(latency for latency, _ in results)
    return {
        "clients": clients,
        "requests": len(texts),
        "median_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": round(1000 * latencies[max(0, round(0.95 * len(latencies)) - 1)], 1),
        "requests_per_s": round(len(texts) / elapsed, 2),
        "characters_per_s": round(sum(map(len, texts)) / elapsed),
        "model_calls": after["batches"] - before["batches"],
        "mean_texts_per_call": round((after["documents"] - before["documents"])
                                     / max(1, after["batches"] - before["batches"]), 2),
        "entities": sum(n for _, n in results),
    }


def direct(model: Path, texts: list[str], threads: int, batch_size: int) -> dict:
    """The same texts through the model in this process, no HTTP: one at a time and in batches of 8."""
    import torch

    from cardioner.data.document import Document
    from cardioner.serving.engine import Engine
    from cardioner.serving.server import silence_progress_bars

    silence_progress_bars()
    torch.set_num_threads(threads)
    engine = Engine(model, batch_size=batch_size)
    engine.predict([Document(str(i), t) for i, t in enumerate(texts[:16])])  # warm-up
    result = {}
    for size in (1, 8):
        start = time.perf_counter()
        for first in range(0, len(texts), size):
            engine.predict([Document(str(i), t) for i, t in enumerate(texts[first : first + size])])
        result[f"texts_per_s_in_calls_of_{size}"] = round(len(texts) / (time.perf_counter() - start), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="an export folder")
    parser.add_argument(
        "--texts", type=Path, default=SAMPLE, help="a folder of .txt files (split into sentences)"
    )
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement")
    parser.add_argument("--clients", default="1,8", help="concurrent clients to measure, comma-separated")
    parser.add_argument(
        "--wait-ms", default="0,5", help="the server's --max-wait-ms settings, comma-separated"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the server's torch threads")
    parser.add_argument("--batch-size", type=int, default=32, help="the server's windows per forward pass")
    args = parser.parse_args()

    pool = sentences(args.texts)
    texts = [pool[i % len(pool)] for i in range(args.requests)]
    runs = []
    for wait_ms in (float(w) for w in args.wait_ms.split(",")):
        process, url = start_server(args.model, wait_ms, args.threads, args.batch_size)
        try:
            load(url, texts[: min(16, len(texts))], 1)  # warm-up: first calls allocate and tokenise
            for clients in (int(c) for c in args.clients.split(",")):
                runs.append({"max_wait_ms": wait_ms, **load(url, texts, clients)})
        finally:
            process.terminate()
            process.wait(timeout=60)
    baseline = direct(args.model, texts, args.threads, args.batch_size)
    by_key = {(r["max_wait_ms"], r["clients"]): r for r in runs}
    ratios = {
        f"wait {w:g} ms: throughput {c} clients / 1 client": round(
            r["requests_per_s"] / by_key[(w, 1)]["requests_per_s"], 2
        )
        for (w, c), r in by_key.items()
        if c != 1 and (w, 1) in by_key
    }
    for (w, c), r in by_key.items():
        ratios[f"wait {w:g} ms, {c} clients: served / direct in calls of {min(c, 8)}"] = round(
            r["requests_per_s"] / baseline[f"texts_per_s_in_calls_of_{1 if c == 1 else 8}"], 2)
    print(json.dumps({
        "model": args.model.name,
        "texts": f"{len(texts)} requests of one sentence each (mean {statistics.mean(map(len, texts)):.0f} "
                 f"characters) from {args.texts.name}",
        "server": {"threads": args.threads, "batch_size": args.batch_size},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "runs": runs,
        "direct": baseline,
        "ratios": ratios,
    }, indent=2))


if __name__ == "__main__":
    main()
