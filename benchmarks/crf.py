"""cardioner's CRF vs pytorch-crf: Viterbi decode and NLL forward+backward; prints JSON.

Medians of repeated runs in one process. Asserts identical paths and NLL values, never timings.

    python benchmarks/crf.py [--repeats 7] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchcrf

from cardioner.modeling import CRF

SHAPES = [(64, 128, 9), (64, 512, 45)]  # (batch, seq_len, num_tags)


def paired_medians(ours, reference, repeats: int) -> tuple[float, float]:
    """Median seconds of each function; runs alternate so that load from other processes hits both alike."""
    ours()  # warm-up
    reference()
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, bucket in ((ours, timings[0]), (reference, timings[1])):
            started = time.perf_counter()
            function()
            bucket.append(time.perf_counter() - started)
    return statistics.median(timings[0]), statistics.median(timings[1])


def inputs(batch: int, seq_len: int, num_tags: int):
    generator = torch.Generator().manual_seed(0)
    emissions = torch.randn(batch, seq_len, num_tags, generator=generator)
    tags = torch.randint(0, num_tags, (batch, seq_len), generator=generator)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    mask = torch.arange(seq_len)[None, :] < lengths[:, None]  # ragged, as real batches are
    return emissions, tags, mask


def bench_shape(batch: int, seq_len: int, num_tags: int, repeats: int) -> dict:
    torch.manual_seed(0)
    reference = torchcrf.CRF(num_tags, batch_first=True)
    ours = CRF(num_tags)
    ours.load_state_dict(reference.state_dict())
    emissions, tags, mask = inputs(batch, seq_len, num_tags)
    mask_uint8 = mask.to(torch.uint8)

    with torch.no_grad():
        assert ours.decode(emissions, mask) == reference.decode(emissions, mask_uint8), "Viterbi paths differ"
        ours_decode, reference_decode = paired_medians(
            lambda: ours.decode(emissions, mask), lambda: reference.decode(emissions, mask_uint8), repeats
        )

    nll_ours = ours.nll(emissions, tags, mask, reduction="sum")
    nll_reference = -reference(emissions, tags, mask_uint8, reduction="sum")
    assert torch.allclose(nll_ours, nll_reference, rtol=1e-5, atol=1e-3), (
        nll_ours.item(),
        nll_reference.item(),
    )
    trainable = emissions.clone().requires_grad_(True)

    def ours_step() -> None:
        ours.nll(trainable, tags, mask, reduction="sum").backward()

    def reference_step() -> None:
        (-reference(trainable, tags, mask_uint8, reduction="sum")).backward()

    ours_nll, reference_nll = paired_medians(ours_step, reference_step, repeats)
    return {
        "shape": {"batch": batch, "seq_len": seq_len, "num_tags": num_tags},
        "decode_ms": {"cardioner": ours_decode * 1e3, "pytorch_crf": reference_decode * 1e3},
        "decode_speedup": reference_decode / ours_decode,
        "nll_forward_backward_ms": {"cardioner": ours_nll * 1e3, "pytorch_crf": reference_nll * 1e3},
        "nll_speedup": reference_nll / ours_nll,
        "identical_paths": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    import warnings

    warnings.filterwarnings("ignore", message="where received a uint8")  # pytorch-crf's own deprecation
    results = [bench_shape(*shape, repeats=arguments.repeats) for shape in SHAPES]
    print(
        json.dumps(
            {
                "device": "cpu",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "repeats": arguments.repeats,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
