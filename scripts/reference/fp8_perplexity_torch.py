#!/usr/bin/env python3
"""An independent torch reference for `rtllm eval perplexity` on FP8 checkpoints written by
`rtllm quantize --format fp8` (compressed-tensors layout).

The model is HF transformers' f32 load of the source GGUF; for each FP8 checkpoint its linears
get the checkpoint's dequantized weights (E4M3 code value x weight_scale, per tensor or per
channel) and a forward pre-hook that fake-quantizes their input as the checkpoint says: static
(x -> e4m3(x / input_scale) * input_scale) or dynamic per token (scale = max(amax / 448,
1 / (448 * 512)) per row). lm_head and the embeddings stay as loaded. The FP8 KV cache is not
modelled. Perplexity as HF's perplexity guide and `rtllm eval perplexity` compute it: windows of
2048 tokens every 1024, each scoring only the tokens no earlier window scored.

Usage: fp8_perplexity_torch.py MODEL_DIR GGUF_NAME TEXT [f32 | FP8_DIR]...
(PyPI: torch, transformers, gguf, safetensors.) Prints one JSON line per variant.
"""
import json
import math
import sys
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MIN_DYNAMIC_SCALE = 1.0 / (FP8_MAX * 512.0)
CONTEXT, STRIDE = 2048, 1024


def fake_quant(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return (x / s).clamp(-FP8_MAX, FP8_MAX).to(FP8).float() * s


def dynamic_hook(_module, args):
    x = args[0]
    s = (x.abs().amax(-1, keepdim=True) / FP8_MAX).clamp(min=MIN_DYNAMIC_SCALE)
    return (fake_quant(x, s),)


def static_hook(input_scale: torch.Tensor):
    return lambda _module, args: (fake_quant(args[0], input_scale),)


def apply_checkpoint(model: torch.nn.Module, ckpt: str) -> int:
    tensors = load_file(f"{ckpt}/model.safetensors")
    group = json.load(open(f"{ckpt}/config.json"))["quantization_config"]["config_groups"]["group_0"]
    dynamic = group["input_activations"]["dynamic"]
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name + ".weight_scale" not in tensors:
            continue
        scale = tensors[name + ".weight_scale"].float()
        scale = scale.reshape(-1, 1) if scale.numel() > 1 else scale.reshape(())
        module.weight.data = tensors[name + ".weight"].float() * scale
        hook = dynamic_hook if dynamic else static_hook(tensors[name + ".input_scale"].float().reshape(()))
        module.register_forward_pre_hook(hook)
        count += 1
    return count


def perplexity(model: torch.nn.Module, ids: torch.Tensor) -> tuple[int, float]:
    n, nll, scored, prev = ids.shape[1], 0.0, 0, 0
    for begin in range(0, n, STRIDE):
        end = min(begin + CONTEXT, n)
        x = ids[:, begin:end]
        with torch.no_grad():
            logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
        token_nll = -logp.gather(1, x[0, 1:, None])[:, 0]
        new = token_nll if begin == 0 else token_nll[-(end - prev):]
        nll, scored, prev = nll + new.sum().item(), scored + new.numel(), end
        if end == n:
            break
    return scored, nll / scored


def main() -> None:
    model_dir, gguf_name, text_file, *variants = sys.argv[1:]
    tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_name)
    ids = tokenizer(open(text_file).read(), add_special_tokens=False, return_tensors="pt").input_ids
    for variant in variants:
        start = time.time()
        model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_name, dtype=torch.float32).eval()
        linears = 0 if variant == "f32" else apply_checkpoint(model, variant)
        scored, mean_nll = perplexity(model, ids)
        print(json.dumps({"variant": variant, "fp8_linears": linears, "text_tokens": ids.shape[1], "tokens_scored": scored,
                          "mean_nll": mean_nll, "perplexity": math.exp(mean_nll), "seconds": round(time.time() - start)}),
              flush=True)


if __name__ == "__main__":
    main()
