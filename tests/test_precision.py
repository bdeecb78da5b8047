"""Numeric precision: native-bf16 detection (auto picks fp32 on CPUs that would emulate bf16), bf16 autocast,
int8 dynamic quantisation of the linear layers, and training in bf16 refused where it would be emulated."""

from __future__ import annotations

import pytest
import torch

from cardioner import precision
from cardioner.errors import ConfigError

CPUINFO = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 fma {extra}\n\n"


def fake_cpuinfo(tmp_path, extra: str):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra), encoding="utf-8")
    return path


def test_cpu_flags_decide_native_bf16(tmp_path):
    assert precision.cpu_flags(fake_cpuinfo(tmp_path, "avx512f avx512_bf16")) >= {"avx2", "avx512_bf16"}
    assert precision.native_bf16("cpu", fake_cpuinfo(tmp_path, "amx_bf16 amx_tile"))[0]
    native, reason = precision.native_bf16("cpu", fake_cpuinfo(tmp_path, "avx512f"))
    assert native is torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert "avx512_bf16" in reason


def test_auto_dtype_is_bf16_only_where_it_is_native(monkeypatch):
    # this machine: whatever its flags say
    expected = torch.bfloat16 if precision.native_bf16("cpu")[0] else torch.float32
    assert precision.resolve_dtype("auto", "cpu") == expected
    monkeypatch.setattr(precision, "native_bf16", lambda device, cpuinfo=None: (True, "a bf16 CPU"))
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "native_bf16", lambda device, cpuinfo=None: (False, "an AVX2 CPU"))
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert precision.resolve_dtype("bfloat16", "cpu") == torch.bfloat16  # asked for: given, with a warning
    assert precision.resolve_dtype("float32", "cpu") == torch.float32
    with pytest.raises(ConfigError, match="float16"):
        precision.resolve_dtype("float16", "cpu")


def test_compute_dtype_runs_matmuls_in_bf16_and_leaves_fp32_alone():
    layer = torch.nn.Linear(8, 4)
    inputs = torch.randn(2, 8)
    with precision.compute_dtype(torch.bfloat16, "cpu"):
        assert layer(inputs).dtype == torch.bfloat16
    with precision.compute_dtype(torch.float32, "cpu"):
        assert layer(inputs).dtype == torch.float32
    assert layer.weight.dtype == torch.float32


def test_int8_quantisation_replaces_linear_layers_in_a_copy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    quantized = precision.quantize_int8(model)
    assert isinstance(model[0], torch.nn.Linear) and type(model[0]) is torch.nn.Linear  # original untouched
    assert "Quantized" in type(quantized[0]).__name__ or "quantized" in type(quantized[0]).__module__
    inputs = torch.randn(5, 16)
    torch.testing.assert_close(quantized(inputs), model(inputs), atol=0.05, rtol=0.05)
    precision.check_quantization("int8")
    with pytest.raises(ConfigError, match="int4"):
        precision.check_quantization("int4")


def test_training_in_bf16_is_refused_where_bf16_would_be_emulated(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16",
                        lambda device, cpuinfo=None: (False, "CPU without avx512_bf16"))
    with pytest.raises(ConfigError, match=r"training.mixed_precision=bf16 .*CPU without avx512_bf16"):
        precision.check_training_precision("bf16", "cpu")
    precision.check_training_precision("no", "cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda device, cpuinfo=None: (True, "a bf16 CPU"))
    precision.check_training_precision("bf16", "cpu")
