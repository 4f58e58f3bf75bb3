#!/usr/bin/env python3
"""Reference outputs for `rtllm quantize --format fp8`, computed with compressed-tensors (the
library llm-compressor quantizes and saves with) from the same source weights and the same
calibration maxima, plus a check that transformers loads rtllm's output.

The Rust test writes its inputs and outputs when asked:

    RTLLM_QUANTIZE_FIXTURE_DIR=/tmp/q cargo nextest run -p rtllm-tests quantize_matches_the_fixture

which leaves, for the tiny Llama of the test (dummy bf16 weights, seed 0):
    /tmp/q/source/              the HF source directory (config.json, model.safetensors, tokenizer)
    /tmp/q/amax.json            {weight name: calibration amax} used for every static run
    /tmp/q/<case>/              rtllm's output for each case (per-tensor|per-channel x static|dynamic)

Then (Python env: torch, transformers, compressed-tensors, safetensors; see requirements.txt):

    python scripts/reference/make_fp8_quantize_fixtures.py --dir /tmp/q

computes, per case, every output tensor with compressed-tensors:
    scale    = calculate_qparams(min, max, args)       (amax / 448 in the weight's dtype)
    weight   = quantize(w, scale, zero_point, args, dtype=torch.float8_e4m3fn)
    input    = calculate_qparams(-amax, amax, input args), amax as a tensor of the model dtype
and the `quantization_config` exactly as llm-compressor's ModelCompressor.update_config writes it
(minus `version`, which names the compressed-tensors release). It writes the FNV-1a-64 of every
tensor's bytes (dtype, shape) and the config into tests/fixtures/quantize/tiny_llama_fp8.json,
compares rtllm's outputs with them, and loads each output with transformers (config parsing and
the dequantized weights equal to compressed-tensors' dequantization of rtllm's tensors).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import compressed_tensors as ct
from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
from compressed_tensors.quantization.utils import calculate_qparams

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests/fixtures/quantize/tiny_llama_fp8.json"
CASES = [("per-tensor", "static"), ("per-tensor", "dynamic"), ("per-channel", "static"), ("per-channel", "dynamic")]
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def weight_args(scheme: str) -> QuantizationArgs:
    strategy = "tensor" if scheme == "per-tensor" else "channel"
    return QuantizationArgs(num_bits=8, type="float", strategy=strategy, symmetric=True, dynamic=False)


def input_args(scheme: str) -> QuantizationArgs:
    if scheme == "static":
        return QuantizationArgs(
            num_bits=8, type="float", strategy="tensor", symmetric=True, dynamic=False, observer="static_minmax"
        )
    return QuantizationArgs(num_bits=8, type="float", strategy="token", symmetric=True, dynamic=True)


def quantization_config(wscheme: str, ascheme: str) -> dict:
    scheme = QuantizationScheme(targets=["Linear"], weights=weight_args(wscheme), input_activations=input_args(ascheme))
    scheme.format = "float-quantized"
    qc = QuantizationConfig(
        config_groups={"group_0": scheme}, ignore=["lm_head"], quantization_status="compressed", format="float-quantized"
    )
    # compressed_tensors ModelCompressor.update_config, without the version.
    return {
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": {},
        **qc.model_dump(exclude=["quant_method"]),
    }


def reference_tensors(source: dict, amax: dict, wscheme: str, ascheme: str) -> dict[str, torch.Tensor]:
    out = {}
    wargs, iargs = weight_args(wscheme), input_args(ascheme)
    for name, w in source.items():
        module = name.removesuffix(".weight")
        if not (name.endswith(".weight") and module.split(".")[-1] in LINEARS):
            out[name] = w
            continue
        if wscheme == "per-tensor":
            lo, hi = w.min().reshape(1), w.max().reshape(1)
        else:
            lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
        scale, zp = calculate_qparams(lo, hi, wargs)
        out[name] = quantize(w, scale, zp, wargs, dtype=torch.float8_e4m3fn)
        out[module + ".weight_scale"] = scale
        if ascheme == "static":
            a = torch.tensor([amax[name]], dtype=torch.float32).to(w.dtype)
            iscale, _ = calculate_qparams(-a, a, iargs)
            out[module + ".input_scale"] = iscale
    return out


def fnv1a64(data: bytes) -> str:
    """FNV-1a (64-bit) of `data`, as hex: the fixture's fingerprint of a tensor's bytes."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def digest(t: torch.Tensor) -> dict:
    raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
    dtype = {torch.float8_e4m3fn: "F8_E4M3", torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}[t.dtype]
    return {"dtype": dtype, "shape": list(t.shape), "fnv1a64": fnv1a64(raw)}


def check_transformers(out_dir: Path, ours: dict, wscheme: str) -> str:
    """Loads rtllm's output with transformers; its dequantized linear weights must equal
    compressed-tensors' dequantization of rtllm's tensors."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(out_dir)
    qc = cfg.quantization_config
    method = qc["quant_method"] if isinstance(qc, dict) else qc.quant_method
    assert method == "compressed-tensors", method
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.bfloat16)
    try:
        from compressed_tensors.compressors import ModelCompressor

        ModelCompressor.from_pretrained_model(model).decompress_model(model)
    except Exception as e:  # the model may already be decompressed at load
        print(f"  (decompress_model: {e})")
    state = model.state_dict()
    checked = 0
    for name, t in ours.items():
        if t.dtype != torch.float8_e4m3fn:
            continue
        module = name.removesuffix(".weight")
        want = dequantize(t, ours[module + ".weight_scale"], args=weight_args(wscheme), dtype=torch.bfloat16)
        got = state[name]
        if got.dtype == torch.float8_e4m3fn:
            got = dequantize(got, state[module + ".weight_scale"], args=weight_args(wscheme), dtype=torch.bfloat16)
        assert torch.equal(got.to(torch.bfloat16), want), f"{name}: transformers' weight differs"
        checked += 1
    return f"transformers loaded it; {checked} dequantized weights equal"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="the directory the Rust test wrote")
    ap.add_argument("--no-transformers", action="store_true", help="skip the transformers load check")
    args = ap.parse_args()

    source = load_file(args.dir / "source/model.safetensors")
    amax = json.loads((args.dir / "amax.json").read_text())
    fixture = {
        "about": "rtllm quantize --format fp8 on the tests' tiny Llama (dummy bf16 weights, seed 0), computed with "
        "compressed-tensors by scripts/reference/make_fp8_quantize_fixtures.py",
        "versions": {"torch": torch.__version__, "compressed_tensors": ct.__version__},
        "source": {n: digest(t) for n, t in sorted(source.items())},
        "amax": amax,
        "cases": {},
    }
    failures = 0
    for wscheme, ascheme in CASES:
        case = f"{wscheme}-{ascheme}"
        ref = reference_tensors(source, amax, wscheme, ascheme)
        expected = {n: digest(t) for n, t in sorted(ref.items())}
        fixture["cases"][case] = {"quantization_config": quantization_config(wscheme, ascheme), "tensors": expected}
        out_dir = args.dir / case
        if not out_dir.is_dir():
            print(f"{case}: no rtllm output at {out_dir}")
            continue
        ours = load_file(out_dir / "model.safetensors")
        got = {n: digest(t) for n, t in sorted(ours.items())}
        bad = sorted(n for n in set(expected) | set(got) if expected.get(n) != got.get(n))
        cfg = json.loads((out_dir / "config.json").read_text())["quantization_config"]
        cfg.pop("version", None)
        if cfg != fixture["cases"][case]["quantization_config"]:
            bad.append("config.json quantization_config")
        status = "equal" if not bad else f"DIFFER: {bad[:5]}"
        print(f"{case}: {len(expected)} tensors, rtllm output {status}")
        failures += bool(bad)
        if not args.no_transformers:
            print(f"  {check_transformers(out_dir, ours, wscheme)}")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE.relative_to(REPO_ROOT)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
