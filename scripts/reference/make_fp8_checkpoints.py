#!/usr/bin/env python3
"""Tiny FP8 Llama checkpoints in the three HF formats, written as their tools write them, and
the logits a torch reference computes for each (tests/tests/fp8_checkpoints.rs checks rtllm
against them; tests/tests/tensor_parallel.rs checks 2-rank splits, against `tp2` for the
dynamic formats, whose row-parallel ranks quantize their own slice of x).

One random bf16 Llama (2 layers, hidden 64, 4 heads / 2 KV heads, intermediate 128, vocab 256,
untied lm_head) is quantized four ways (torch float8_e4m3fn; x.clamp(-448, 448).to(fp8) as
llm-compressor, ModelOpt and fbgemm do):

  ct_static    compressed-tensors, weights strategy "tensor", static per-tensor input_scale
               (llm-compressor's FP8 scheme: weight_scale [1] and input_scale [1] in bf16).
  ct_dynamic   compressed-tensors, weights strategy "channel", dynamic per-token activations
               (FP8_DYNAMIC: weight_scale [N, 1] bf16, no input_scale).
  modelopt     ModelOpt FP8: hf_quant_config.json (quant_algo FP8, exclude_modules lm_head) and
               config.json quantization_config (quant_method modelopt); weight_scale and
               input_scale f32 scalars (shape []).
  fbgemm       transformers' FbgemmFp8Config: weight_scale [N, 1] f32, input_scale_ub [1] f32,
               activation_scale_ub 1200, modules_to_not_convert [lm_head].
  modelopt_pcpt ModelOpt FP8_PER_CHANNEL_PER_TOKEN (per-channel weights, dynamic per-token
               activations): weight_scale [N, 1] f32, no input_scale.

  ct_static_kv the ct_static weights plus llm-compressor's FP8 KV cache: kv_cache_scheme
               {num_bits 8, type float, strategy tensor, dynamic false} and per-layer
               model.layers.N.self_attn.k_scale / v_scale [1] in bf16.
  modelopt_kv  the modelopt weights plus kv_cache_quant_algo FP8 and ModelOpt's HF-export names
               model.layers.N.self_attn.k_proj.k_scale / v_proj.v_scale, f32 scalars.

ct_static and modelopt hold the same FP8 weights and scales (the scales rounded to bf16 for
both), as do ct_dynamic, fbgemm and modelopt_pcpt, and ct_static_kv and modelopt_kv (kv scales too): equal
checkpoints in different formats.

lm_head, the embedding and the norms stay bf16 (every tool leaves them unquantized). Static
input scales are calibrated (amax / 448 per linear input) on a calibration prompt.

The reference forward runs in float64 on the dequantized weights (FP8 value x scale) with the
activations of every quantized linear quantized the same way as the checkpoint says (static:
x / input_scale; dynamic: per row, scale = max(amax, tiny) / 448), then dequantized. With an
FP8 KV cache, the rotated k and the v entering attention are stored e4m3(x / scale) and read
back times the scale (the scales: amax(|k|) / 448 and amax(|v|) / 448 per layer over the
calibration prompt, rounded to bf16).

Writes tests/fixtures/fp8/<name>/{config.json, model.safetensors, tokenizer.json,
tokenizer_config.json[, hf_quant_config.json]} and tests/fixtures/fp8/expected.json (prompts,
per format the last-position logits and 8 greedy tokens).

Run: python3 scripts/reference/make_fp8_checkpoints.py   (torch, safetensors; CI uses the
committed output).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[2] / "tests/fixtures/fp8"
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
MIN_DYN_SCALE = 1.0 / (FP8_MAX * 512.0)

CONFIG = dict(
    architectures=["LlamaForCausalLM"],
    model_type="llama",
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=256,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    torch_dtype="bfloat16",
    hidden_act="silu",
)
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
CALIB = [5, 17, 42, 99, 200, 7, 33, 128, 64, 250, 3, 11]
PROMPTS = [[1, 72, 101, 108, 108, 111], [1, 200, 13, 77, 5, 250, 31, 90, 18]]
GREEDY = 8
MODELOPT = {"name": "modelopt", "version": "0.19.0"}  # the producer ModelOpt's exports name


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16)


def base_weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    c = CONFIG
    h, i, v, hd = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    shapes = {"self_attn.q_proj": (c["num_attention_heads"] * hd, h), "self_attn.k_proj": (c["num_key_value_heads"] * hd, h),
              "self_attn.v_proj": (c["num_key_value_heads"] * hd, h), "self_attn.o_proj": (h, c["num_attention_heads"] * hd),
              "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i)}
    w = {"model.embed_tokens.weight": torch.randn(v, h, generator=g), "lm_head.weight": torch.randn(v, h, generator=g) / math.sqrt(h),
         "model.norm.weight": 1 + 0.1 * torch.randn(h, generator=g)}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(h, generator=g)
        for name, shape in shapes.items():
            # Rows of different magnitudes, so per-channel and per-tensor scales differ.
            rows = torch.exp(torch.randn(shape[0], 1, generator=g) * 0.5)
            w[p + name + ".weight"] = torch.randn(*shape, generator=g) * rows / math.sqrt(shape[1])
    return {k: bf16(t) for k, t in w.items()}


def quantize_weight(w: torch.Tensor, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, bf16-representable f32 scale [N] or [1]) as llm-compressor computes them."""
    w = w.float()
    amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().reshape(1)
    scale = bf16(amax / FP8_MAX).float()  # compressed-tensors stores scales in the model dtype
    s = scale[:, None] if per_channel else scale
    q = (w / s).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def fake_quant_act(x: torch.Tensor, static_scale: float | None, ub: float | None) -> torch.Tensor:
    x32 = x.float()
    if static_scale is not None:
        s = torch.full((x32.shape[0], 1), static_scale, dtype=torch.float32)
    else:
        amax = x32.abs().amax(dim=1, keepdim=True)
        if ub is not None:
            amax = amax.clamp(max=ub)
        s = (amax / FP8_MAX).clamp(min=MIN_DYN_SCALE)
    q = (x32 / s).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.double() * s.double()


def rope(x: torch.Tensor, pos: torch.Tensor, hd: int, theta: float) -> torch.Tensor:
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = pos.double()[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x = x.view(x.shape[0], -1, hd)
    rot = torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1)
    return (x * cos[:, None, :] + rot * sin[:, None, :]).reshape(x.shape[0], -1)


def fake_quant_kv(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x as an FP8 KV cache stores and returns it: e4m3(x / scale) * scale (f32 division)."""
    s = torch.tensor(scale, dtype=torch.float32)
    return (x.float() / s).clamp(-FP8_MAX, FP8_MAX).to(FP8).double() * s.double()


def forward(dq: dict, linear, tokens: list[int], kv=None, observe_kv=None) -> torch.Tensor:
    """Last-position logits in f64 on weights `dq`; `linear(x, weight_name)` runs each layer;
    `kv[layer] = (k_scale, v_scale)` fake-quantizes the KV cache; `observe_kv(layer, k, v)`
    sees each layer's rotated k and v."""
    c = CONFIG
    hd, nh, nkv, eps = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"], c["rms_norm_eps"]

    def norm(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w.double()

    t = len(tokens)
    pos = torch.arange(t)
    x = dq["model.embed_tokens.weight"][tokens].double()
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, dq[p + "input_layernorm.weight"])
        q = rope(linear(h, p + "self_attn.q_proj.weight"), pos, hd, c["rope_theta"]).view(t, nh, hd)
        k = rope(linear(h, p + "self_attn.k_proj.weight"), pos, hd, c["rope_theta"]).view(t, nkv, hd)
        v = linear(h, p + "self_attn.v_proj.weight").view(t, nkv, hd)
        if observe_kv is not None:
            observe_kv(layer, k, v)
        if kv is not None:
            k, v = fake_quant_kv(k, kv[layer][0]), fake_quant_kv(v, kv[layer][1])
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
        att = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
        att = att.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        o = torch.einsum("hqk,khd->qhd", att, v).reshape(t, nh * hd)
        x = x + linear(o, p + "self_attn.o_proj.weight")
        h = norm(x, dq[p + "post_attention_layernorm.weight"])
        gate, up = linear(h, p + "mlp.gate_proj.weight"), linear(h, p + "mlp.up_proj.weight")
        x = x + linear(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj.weight")
    x = norm(x, dq["model.norm.weight"])
    return x[-1] @ dq["lm_head.weight"].double().T


ROW_PARALLEL = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def fp8_linear(dq: dict, scheme: dict, tp: int = 1):
    """A quantized model's linear: activations fake-quantized as `scheme[name]` says. With
    `tp` ranks, a row-parallel linear (o_proj, down_proj) runs as its ranks do: each rank
    quantizes its own contiguous slice of x's columns (a dynamic scale from that slice's amax,
    as vLLM's row-parallel layers do) against its slice of the weight, and the partial products
    are summed (the all-reduce)."""
    def linear(x, name):
        static, ub = scheme[name]
        if tp > 1 and name.endswith(ROW_PARALLEL):
            return sum(fake_quant_act(xs, static, ub) @ ws.T for xs, ws in zip(x.chunk(tp, 1), dq[name].chunk(tp, 1)))
        return fake_quant_act(x, static, ub) @ dq[name].T
    return linear


def calibrate(base: dict) -> dict[str, float]:
    """Static input scales: amax / 448 of each linear's input over the calibration prompt run
    through the bf16 model (llm-compressor's minmax observer), rounded to bf16."""
    seen: dict[str, float] = {}
    dq = {k: v.double() for k, v in base.items()}

    def observe(x, name):
        seen[name] = max(seen.get(name, 0.0), x.abs().max().item())
        return x @ dq[name].T

    forward(dq, observe, CALIB)
    return {k: bf16(torch.tensor(v / FP8_MAX)).float().item() for k, v in seen.items()}


def calibrate_kv(dq: dict, linear) -> list[tuple[float, float]]:
    """Per-layer (k_scale, v_scale): amax(|k|) / 448 and amax(|v|) / 448 of the rotated k and the
    v over the calibration prompt through the quantized model (llm-compressor's minmax KV
    observer), rounded to bf16."""
    amax: dict[int, list[float]] = {}

    def observe(layer, k, v):
        a = amax.setdefault(layer, [0.0, 0.0])
        a[0], a[1] = max(a[0], k.abs().max().item()), max(a[1], v.abs().max().item())

    forward(dq, linear, CALIB, observe_kv=observe)
    to_scale = lambda a: bf16(torch.tensor(a / FP8_MAX)).float().item()  # noqa: E731
    return [(to_scale(amax[layer][0]), to_scale(amax[layer][1])) for layer in sorted(amax)]


def tokenizer_files(d: Path) -> None:
    """A byte-level BPE over the 256 bytes (GPT-2's byte-to-unicode table), no merges."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_char = dict(zip(bs, (chr(c) for c in cs)))
    vocab = {byte_char[b]: b for b in range(256)}
    tok = {"version": "1.0", "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None,
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
           "model": {"type": "BPE", "vocab": vocab, "merges": []}}
    (d / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": byte_char[1], "eos_token": byte_char[2], "add_bos_token": False}, ensure_ascii=False))


def ct_config(per_channel: bool, static: bool, kv: bool = False) -> dict:
    args = lambda strategy, dynamic, observer: {  # noqa: E731
        "num_bits": 8, "type": "float", "symmetric": True, "group_size": None, "strategy": strategy,
        "block_structure": None, "dynamic": dynamic, "actorder": None, "observer": observer, "observer_kwargs": {}}
    return {
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": args("channel" if per_channel else "tensor", False, "minmax"),
            "input_activations": args("tensor", False, "minmax") if static else args("token", True, None),
            "output_activations": None, "format": "float-quantized"}},
        "format": "float-quantized", "global_compression_ratio": None, "ignore": ["lm_head"],
        "kv_cache_scheme": {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None, "strategy": "tensor",
                            "block_structure": None, "dynamic": False, "actorder": None, "observer": "minmax",
                            "observer_kwargs": {}} if kv else None,
        "quant_method": "compressed-tensors", "quantization_status": "compressed",
    }


def write(name: str, tensors: dict, quant_config: dict, hf_quant: dict | None) -> None:
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = dict(CONFIG, quantization_config=quant_config)
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    if hf_quant is not None:
        (d / "hf_quant_config.json").write_text(json.dumps(hf_quant, indent=2))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "model.safetensors"), metadata={"format": "pt"})
    tokenizer_files(d)


def reference(dq: dict, linear, kv=None) -> dict:
    """Per prompt the last-position logits and the greedy continuation."""
    result = {"logits": [], "tokens": []}
    for prompt in PROMPTS:
        result["logits"].append([round(v, 6) for v in forward(dq, linear, prompt, kv).tolist()])
        seq = list(prompt)
        for _ in range(GREEDY):
            seq.append(int(forward(dq, linear, seq, kv).argmax()))
        result["tokens"].append(seq[len(prompt):])
    return result


def write_kv(ct: dict, mo: dict, kv: list[tuple[float, float]]) -> None:
    """ct_static_kv and modelopt_kv: the static checkpoints plus their producers' FP8 KV cache."""
    ct_kv, mo_kv = dict(ct), dict(mo)
    for layer, (ks, vs) in enumerate(kv):
        p = f"model.layers.{layer}.self_attn."
        ct_kv[p + "k_scale"], ct_kv[p + "v_scale"] = bf16(torch.tensor([ks])), bf16(torch.tensor([vs]))
        mo_kv[p + "k_proj.k_scale"] = torch.tensor(ks, dtype=torch.float32)
        mo_kv[p + "v_proj.v_scale"] = torch.tensor(vs, dtype=torch.float32)
    write("ct_static_kv", ct_kv, ct_config(False, True, kv=True), None)
    quant = {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}
    write("modelopt_kv", mo_kv, dict(quant_method="modelopt", producer=MODELOPT, **quant),
          {"producer": MODELOPT, "quantization": quant})


def main() -> None:
    base = base_weights()
    static_scales = calibrate(base)
    plain = {k: v for k, v in base.items() if not any(k.endswith(l + ".weight") for l in LINEARS)}
    quantized = [k for k in base if k not in plain]
    expected = {"prompts": PROMPTS, "greedy_tokens": GREEDY, "formats": {}}

    for per_channel, static in [(False, True), (True, False)]:
        q = {k: quantize_weight(base[k], per_channel) for k in quantized}
        ub = 1200.0
        # compressed-tensors: scales in the model dtype, [1] or [N, 1]; input_scale [1].
        ct = dict(plain)
        for k, (w, s) in q.items():
            m = k[: -len(".weight")]
            ct[k] = w
            ct[m + ".weight_scale"] = bf16(s[:, None] if per_channel else s)
            if static:
                ct[m + ".input_scale"] = bf16(torch.tensor([static_scales[k]]))
        ct_name = "ct_static" if static else "ct_dynamic"
        write(ct_name, ct, ct_config(per_channel, static), None)
        if static:
            # ModelOpt FP8: f32 scalar scales.
            mo = dict(plain)
            for k, (w, s) in q.items():
                m = k[: -len(".weight")]
                mo[k] = w
                mo[m + ".weight_scale"] = s.reshape(()).float()
                mo[m + ".input_scale"] = torch.tensor(static_scales[k], dtype=torch.float32)
            quant = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": ["lm_head"]}
            write("modelopt", mo, dict(quant_method="modelopt", producer=MODELOPT, **quant), {"producer": MODELOPT, "quantization": quant})
            others = ["modelopt"]
        else:
            # fbgemm (transformers FbgemmFp8Linear): weight_scale [N, 1] f32, input_scale_ub [1] f32.
            fb = dict(plain)
            for k, (w, s) in q.items():
                m = k[: -len(".weight")]
                fb[k] = w
                fb[m + ".weight_scale"] = s[:, None].float()
                fb[m + ".input_scale_ub"] = torch.tensor([ub], dtype=torch.float32)
            write("fbgemm", fb, {"quant_method": "fbgemm_fp8", "activation_scale_ub": ub, "modules_to_not_convert": ["lm_head"]}, None)
            # ModelOpt FP8_PER_CHANNEL_PER_TOKEN: the per-channel weight quantizer's amax / 448
            # exported as weight_scale [N, 1] f32 (amax keeps its reduced axis); the per-token
            # input quantizer is dynamic, so no input_scale.
            pc = dict(plain)
            for k, (w, s) in q.items():
                pc[k] = w
                pc[k[: -len(".weight")] + ".weight_scale"] = s[:, None].float()
            quant = {"quant_algo": "FP8_PER_CHANNEL_PER_TOKEN", "kv_cache_quant_algo": None, "exclude_modules": ["lm_head"]}
            write("modelopt_pcpt", pc, dict(quant_method="modelopt", producer=MODELOPT, **quant),
                  {"producer": MODELOPT, "quantization": quant})
            others = ["fbgemm", "modelopt_pcpt"]

        dq = {k: v.double() for k, v in plain.items()}
        scheme = {}
        for k, (w, s) in q.items():
            dq[k] = w.double() * (s.double()[:, None] if per_channel else s.double())
            scheme[k] = (static_scales[k], None) if static else (None, ub)
        linear = fp8_linear(dq, scheme)
        result = reference(dq, linear)
        if not static:
            # Tensor parallelism over 2 ranks: per-rank dynamic scales change the numbers.
            result["tp2"] = reference(dq, fp8_linear(dq, scheme, tp=2))
        expected["formats"][ct_name] = result
        for other in others:
            expected["formats"][other] = result
        if static:
            kv = calibrate_kv(dq, linear)
            write_kv(ct, mo, kv)
            kv_result = reference(dq, linear, kv)
            kv_result["kv_scales"] = kv
            expected["formats"]["ct_static_kv"] = kv_result
            expected["formats"]["modelopt_kv"] = kv_result
    (OUT / "expected.json").write_text(json.dumps(expected))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
