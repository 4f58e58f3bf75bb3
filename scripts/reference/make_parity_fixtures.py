#!/usr/bin/env python3
"""Greedy-decoding and logit parity fixtures for SmolLM2-135M-Instruct, made with HF transformers.

HF transformers loads the Q4_1 GGUF directly (dequantized to f32, Q/K un-permuted by its
LlamaTensorProcessor), which makes it an independent reference for rtllm's own GGUF loader,
tokenizer and Llama forward pass.

Run (model from scripts/fetch-default-model.sh, Python env from scripts/reference/requirements.txt):

    /work/pyenv/bin/python scripts/reference/make_parity_fixtures.py --model PATH

Writes (into --out-dir, default tests/fixtures/parity/):
  smollm2_greedy.json       per prompt: text, chat messages, prompt token ids, 32 greedy token ids
                            and their text, last-prompt-position logits (top-20 and statistics),
                            and per generated step the top-1/top-2 logits and their margin.
  smollm2_last_logits.json  the FULL last-prompt-position logits (vocab 49152, 5 significant
                            digits) of the first FULL_LOGITS_CASES prompts.

Generation: model.generate(do_sample=False, max_new_tokens=32, eos_token_id=None), i.e. plain
argmax at every step with no repetition penalty, and EOS (<|im_end|>, id 2) is NOT a stop token,
so the continuation always has exactly 32 ids and may contain id 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REPO_ROOT,
    check_model,
    default_model_path,
    load_model,
    load_tokenizer,
    model_info,
    sig,
    smollm_pretokenizer_backend,
    versions,
    write_json,
)

MAX_NEW_TOKENS = 32
TOP_K = 20
FULL_LOGITS_CASES = 3

PLAIN_PROMPTS = [
    ("capital_france", "The capital of France is"),
    ("once_upon", "Once upon a time"),
    ("fibonacci", "def fibonacci(n):"),
    ("digits_punct", "In 2023, sales rose 12.5% to $1,234,567; by 2024-06-30 they'd hit 2,000,000!"),
    ("cafe_fr", "Le café est"),
    ("quick_fox", "The quick brown fox jumps over the lazy dog. The quick brown fox"),
    ("list_numbers", "1, 2, 3, 4, 5,"),
    ("json_snippet", '{"name": "Alice", "age": 30, "city":'),
    (
        "long_photosynthesis",
        "Photosynthesis is the process by which green plants, algae and some bacteria convert "
        "light energy from the sun into chemical energy. During this process, carbon dioxide "
        "taken from the air and water absorbed by the roots are transformed into glucose and "
        "oxygen, which is released into the atmosphere. The main pigment involved is",
    ),
]

CHAT_CONVERSATIONS = [
    ("chat_capital", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "chat_system_sky",
        [
            {"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
    ),
    (
        "chat_multi_turn",
        [
            {"role": "user", "content": "Hi! Can you help me with math?"},
            {"role": "assistant", "content": "Of course! What do you need help with?"},
            {"role": "user", "content": "What is 7 times 8?"},
        ],
    ),
    (
        "chat_code",
        [
            {"role": "system", "content": "You are a helpful coding assistant."},
            {"role": "user", "content": "Write a Python function that reverses a string."},
        ],
    ),
]


def logit_summary(logits) -> dict:
    """Top-k (id, logit) pairs and statistics of one f32 logits vector (torch tensor [vocab])."""
    import torch

    values, ids = torch.topk(logits, TOP_K)
    return {
        "argmax": int(ids[0]),
        "top20": [[int(i), sig(v)] for i, v in zip(ids.tolist(), values.tolist())],
        "max": sig(logits.max().item()),
        "min": sig(logits.min().item()),
        "mean": sig(logits.mean().item()),
        "std": sig(logits.std(unbiased=False).item()),
    }


def step_margins(step_logits: list, chosen: list[int]) -> list[dict]:
    """Per generated step: the chosen id, top-1/top-2 ids and logits, and their margin."""
    import torch

    steps = []
    for step, (logits, token) in enumerate(zip(step_logits, chosen)):
        values, ids = torch.topk(logits, 2)
        if int(ids[0]) != token:
            raise RuntimeError(f"step {step}: generate chose {token} but argmax is {int(ids[0])}")
        steps.append(
            {
                "step": step,
                "token_id": token,
                "top1_logit": sig(values[0].item()),
                "top2_id": int(ids[1]),
                "top2_logit": sig(values[1].item()),
                "margin": sig((values[0] - values[1]).item()),
            }
        )
    return steps


def run_case(model, tok, smollm, name: str, prompt: str, messages) -> tuple[dict, list]:
    import torch

    enc = tok(prompt, return_tensors="pt")  # default add_special_tokens=True, as HF users call it
    ids = enc.input_ids
    plain_ids = tok(prompt, add_special_tokens=False).input_ids
    prompt_ids = ids[0].tolist()
    bos_added = len(prompt_ids) == len(plain_ids) + 1 and prompt_ids[0] == tok.bos_token_id
    if not bos_added and prompt_ids != plain_ids:
        raise RuntimeError(f"{name}: add_special_tokens changed ids in an unexpected way")

    with torch.inference_mode():
        last_logits = model(ids, attention_mask=enc.attention_mask).logits[0, -1].float()
        out = model.generate(
            ids,
            attention_mask=enc.attention_mask,
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=None,
            repetition_penalty=1.0,
            return_dict_in_generate=True,
            output_logits=True,
        )
    continuation = out.sequences[0, ids.shape[1] :].tolist()
    if len(continuation) != MAX_NEW_TOKENS:
        raise RuntimeError(f"{name}: expected {MAX_NEW_TOKENS} new tokens, got {len(continuation)}")
    step_logits = [step[0].float() for step in out.logits]
    step0_diff = (step_logits[0] - last_logits).abs().max().item()

    case = {
        "name": name,
        "prompt": prompt,
        "is_chat": messages is not None,
        "messages": messages,
        "prompt_ids": prompt_ids,
        "bos_added": bos_added,
        "prompt_ids_match_smollm_pretokenizer": smollm.encode(prompt).ids == prompt_ids,
        "n_prompt_tokens": len(prompt_ids),
        "continuation_ids": continuation,
        "continuation_text": tok.decode(continuation),
        "continuation_text_skip_special": tok.decode(continuation, skip_special_tokens=True),
        "eos_in_continuation": tok.eos_token_id in continuation,
        "last_prompt_logits": logit_summary(last_logits),
        "generate_step0_vs_forward_max_abs_diff": sig(step0_diff, 3),
        "steps": step_margins(step_logits, continuation),
    }
    if messages is not None:
        templated = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        templated_ids = templated["input_ids"] if hasattr(templated, "keys") else list(templated)
        case["apply_chat_template_tokenize_ids_match"] = list(templated_ids) == prompt_ids
    return case, [sig(v) for v in last_logits.tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path(), help="GGUF path")
    parser.add_argument(
        "--out-dir", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "parity"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = check_model(args.model)
    tok = load_tokenizer(path)
    model = load_model(path)
    smollm = smollm_pretokenizer_backend(tok)

    prompts = [(name, text, None) for name, text in PLAIN_PROMPTS]
    for name, messages in CHAT_CONVERSATIONS:
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts.append((name, text, messages))

    cases, full = [], []
    for index, (name, text, messages) in enumerate(prompts):
        case, logits = run_case(model, tok, smollm, name, text, messages)
        case["has_full_logits"] = index < FULL_LOGITS_CASES
        if index < FULL_LOGITS_CASES:
            full.append({"name": name, "prompt_ids": case["prompt_ids"], "logits": logits})
        cases.append(case)
        print(
            f"{name}: {case['n_prompt_tokens']} prompt tokens -> {case['continuation_text']!r}",
            file=sys.stderr,
        )

    header = {
        "generator": "scripts/reference/make_parity_fixtures.py",
        "model": model_info(path),
        "versions": versions(),
        "settings": {
            "dtype": "float32",
            "device": "cpu",
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "do_sample": False,
            "max_new_tokens": MAX_NEW_TOKENS,
            "repetition_penalty": 1.0,
            "eos_handling": "generate(eos_token_id=None): EOS is not a stop token; the argmax is "
            "taken at every step, so every continuation has exactly 32 ids and may contain the "
            "eos id",
            "prompt_tokenization": "tokenizer(prompt) with default add_special_tokens=True; chat "
            "prompts are apply_chat_template(messages, add_generation_prompt=True, tokenize=False)",
            "logit_rounding": "5 significant digits",
            "steps": "per generated step: chosen id (== top-1), top-2 id, both raw logits "
            "(generate output_logits) and margin = top1 - top2",
        },
        "tokenizer": {
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "bos_added_to_prompts": any(c["bos_added"] for c in cases),
        },
        "full_logits_file": "smollm2_last_logits.json",
    }
    write_json(args.out_dir / "smollm2_greedy.json", {**header, "cases": cases})
    write_json(
        args.out_dir / "smollm2_last_logits.json",
        {
            "generator": header["generator"],
            "model": header["model"],
            "versions": header["versions"],
            "description": "full f32 logits at the last prompt position, 5 significant digits",
            "vocab_size": len(full[0]["logits"]),
            "cases": full,
        },
        compact=True,
    )


if __name__ == "__main__":
    main()
