"""Numeric precision for prediction and training: which dtype a device runs natively, bf16 autocast, and int8
dynamic quantisation of the linear layers.

- **bf16.** A device computes in bfloat16 natively when it has bf16 matrix units: an NVIDIA GPU of compute
  capability 8.0 or later (Ampere+), or a CPU with AVX512_BF16 or AMX (``/proc/cpuinfo`` flags
  ``avx512_bf16`` / ``amx_bf16``, which torch also reports). Elsewhere torch *emulates* bf16 — on an AVX2 CPU
  a bf16 matmul was measured ~80x slower than fp32, and a MiniLM forward 5x slower — so ``--dtype auto`` picks
  bf16 only where it is native, and fp32 otherwise. bf16 runs through ``torch.autocast``: the matmuls of the
  backbone and head in bf16, softmax, layer norms and the CRF's forward-backward in fp32, the weights kept as
  they are.
- **int8.** ``--quantize int8`` replaces every ``nn.Linear`` of the backbone and head by a dynamically
  quantised one (weights int8 per tensor, activations quantised per batch;
  ``torch.ao.quantization.quantize_dynamic``, fbgemm/x86 kernels): CPU only. torch marks
  ``torch.ao.quantization`` deprecated in favour of torchao, but it still works in torch 2.13 and needs
  nothing else; its deprecation warnings are silenced here. The CRF (no linear layer) stays in fp32.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from cardioner.errors import ConfigError

logger = logging.getLogger("cardioner")

DTYPES = ("auto", "float32", "bfloat16")
QUANTIZATIONS = ("none", "int8")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (``flags`` line of ``/proc/cpuinfo``; empty where there is none)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def native_bf16(device: torch.device | str, cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and why (a phrase for the log and error messages)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        native = major >= 8
        return native, f"GPU compute capability {major}.{minor}" + ("" if native else " (bf16 needs 8.0+)")
    if device.type != "cpu":
        return False, f"no native bf16 check for {device.type}"
    flags = cpu_flags(cpuinfo)
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    if not found and hasattr(torch.cpu, "_is_avx512_bf16_supported"):  # torch's own check (no /proc/cpuinfo)
        found = ["avx512_bf16"] if torch.cpu._is_avx512_bf16_supported() else []
        found += ["amx"] if torch.cpu._is_amx_tile_supported() else []
    capability = torch.backends.cpu.get_cpu_capability()
    if found:
        return True, f"CPU with {', '.join(found)} (torch: {capability})"
    return False, f"CPU without avx512_bf16 or amx_bf16 (torch: {capability}): bf16 would be emulated"


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """The compute dtype ``name`` ("auto", "float32", "bfloat16") means on ``device``; auto is bf16 only where
    the device runs it natively (``native_bf16``), and says what it chose in the log."""
    if name not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    if name == "float32":
        return torch.float32
    native, reason = native_bf16(device)
    if name == "bfloat16":
        if not native:
            logger.warning("bfloat16 on a device without native bf16 (%s): expect it to be slower than "
                           "float32", reason)
        return torch.bfloat16
    chosen = torch.bfloat16 if native else torch.float32
    logger.info("dtype auto: %s (%s)", "bfloat16" if native else "float32", reason)
    return chosen


@contextlib.contextmanager
def compute_dtype(dtype: torch.dtype, device: torch.device | str) -> Iterator[None]:
    """Run the block in ``dtype``: nothing to do for fp32; bf16 (or fp16) through ``torch.autocast``."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantised to int8 (CPU only; see the module
    docstring). The original is left as it is."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ConfigError(f"int8 quantisation runs on CPU only (the model is on {device}); choose a dtype "
                          "instead")
    engines = torch.backends.quantized.supported_engines
    if not {"x86", "fbgemm"} & set(engines):
        raise ConfigError(f"int8 quantisation needs torch's x86/fbgemm kernels; this torch has {engines}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(deprecated|will be removed).*")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def check_quantization(name: str) -> None:
    """ConfigError for a quantisation other than "none" or "int8"."""
    if name not in QUANTIZATIONS:
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {name!r}")


def check_training_precision(mixed_precision: str, device: torch.device | str) -> None:
    """ConfigError for ``training.mixed_precision=bf16`` on a device that would emulate bf16.

    Measured on this project's AVX2 CPU: the bf16 autocast forward ran 7x slower than fp32
    (docs/benchmarks.md, "Inference at collection scale"); a training step is the same matmuls, forward and
    backward.
    """
    device = torch.device(device)
    if mixed_precision == "bf16":
        native, reason = native_bf16(device)
        if not native:
            raise ConfigError(f"training.mixed_precision=bf16 needs native bf16 arithmetic, and this "
                              f"device has none ({reason}); emulated bf16 runs several times slower than "
                              "fp32 here. Set training.mixed_precision=no (or train on a GPU of compute "
                              "capability 8.0+, or a CPU with avx512_bf16/amx_bf16)")
