#!/usr/bin/env python3
"""Tokenizer and chat-template fixtures for SmolLM2-135M-Instruct, made with HF transformers.

The HF tokenizer is built from the GGUF metadata (tokenizer.ggml.* : GPT-2 style byte-level BPE,
vocab 49152, 48900 merges), so it checks rtllm's own GGUF tokenizer and chat template.

Run (model from scripts/fetch-default-model.sh, Python env from scripts/reference/requirements.txt):

    /work/pyenv/bin/python scripts/reference/make_tokenizer_fixtures.py --model PATH

Writes tests/fixtures/tokenizer/smollm2.json (or --out) with:
  special        bos/eos/unk/pad ids and strings, the added/special tokens, GGUF tokenizer flags
  cases          ~65 strings: encode(s, add_special_tokens=False) ids, their token pieces
                 (byte-level strings such as "Ġhello"), decode(ids), whether it round-trips,
                 and ids_smollm: the ids under the GGUF's own "smollm" pre-tokenizer
                 (digits split first), which transformers' GGUF converter does not apply
  with_special   a few strings encoded with add_special_tokens=True (shows whether BOS is added)
  chat_template  the raw template string from the GGUF metadata
  chat           3 conversations rendered with apply_chat_template(tokenize=False) with
                 add_generation_prompt True and False, and the ids of each rendering
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
    gguf_metadata,
    load_tokenizer,
    model_info,
    smollm_pretokenizer_backend,
    versions,
    write_json,
)

STRINGS = [
    # plain ASCII
    "Hello world",
    "Hello, world!",
    "The capital of France is",
    "HELLO WORLD",
    "hello",
    " hello",
    "a",
    "",
    " ",
    "antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaa",
    # digits and numbers
    "12345 678",
    "3.14159",
    "1,000,000",
    "In 2023, sales rose 12.5% to $1,234,567.",
    "2024-06-30T12:34:56Z",
    "0x1F 0b1010 1e-9",
    # whitespace runs / other numerics right before digits: HF's GGUF tokenizer and the GGUF's
    # "smollm" pre-tokenizer disagree here (see ids_smollm)
    "a  1",
    "x    2024",
    "Total:   42",
    "\n\n1. item\n2. item",
    "x² ½ ³⁄₄",
    # punctuation
    "~!@#$%^&*()_+-=[]{}|;':\",./<>?`",
    "Wait... what?!",
    "(a) [b] {c} <d>",
    "--- *** ___ ===",
    # whitespace
    "a  b   c    d",
    "          ",
    "\n",
    "\n\n\n",
    "line one\nline two\n",
    "tab\tseparated\tvalues",
    " \t \n ",
    "  leading spaces",
    "trailing spaces   ",
    "windows\r\nline endings\r\n",
    # contractions
    "don't I'll we've they'd it's you're I'm",
    "DON'T SHOUT, IT'S LOUD",
    "the dog's bone and the cats' toys",
    "'quoted' \"double\"",
    # non-ASCII
    "Le café est",
    "naïve façade über straße",
    "Привет, мир!",
    "こんにちは世界",
    "你好，世界！",
    "안녕하세요",
    "مرحبا بالعالم",
    "Ελληνικά και עברית",
    "emoji 😀👍🏽 🇫🇷 ❤️",
    "€100 £50 ¥1000 ₹20",
    "∑ x² ≤ ∞, α→β",
    "e\u0301 vs \u00e9",
    "non\u00a0breaking\u200bzero\u200dwidth",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    # code
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() {\n\tprintln!(\"{}\", x.len());\n}",
    '<div class="x">Hi &amp; bye</div>',
    '{"name": "Alice", "age": 30}',
    "https://example.com/path?q=1&r=2#frag user@example.com",
    "SELECT * FROM users WHERE id = 42;",
    # special tokens inside text (the HF tokenizer matches added tokens in raw text)
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|im_end|>more text",
    "<|im_start",
    "< |im_start| >",
    "<file_sep><filename>main.py",
]

WITH_SPECIAL = ["Hello world", "The capital of France is", "<|im_start|>user\nhi<|im_end|>", ""]

CONVERSATIONS = [
    ("user_only", [{"role": "user", "content": "What is the capital of France?"}]),
    (
        "system_user",
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Why is the sky blue?"},
        ],
    ),
    (
        "multi_turn",
        [
            {"role": "system", "content": "You are a helpful math tutor."},
            {"role": "user", "content": "Hi! Can you help me with math?"},
            {"role": "assistant", "content": "Of course! What do you need help with?"},
            {"role": "user", "content": "What is 7 times 8?\nShow your work."},
        ],
    ),
]

GGUF_TOKENIZER_KEYS = [
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.chat_template",
]


def encode_case(tok, smollm, text: str) -> dict:
    ids = tok.encode(text, add_special_tokens=False)
    decoded = tok.decode(ids)
    ids_smollm = smollm.encode(text, add_special_tokens=False).ids
    case = {
        "text": text,
        "ids": ids,
        "pieces": tok.convert_ids_to_tokens(ids),
        "decoded": decoded,
        "roundtrip": decoded == text,
        "ids_smollm": ids_smollm,
        "smollm_differs": ids_smollm != ids,
    }
    if ids_smollm != ids:
        case["pieces_smollm"] = smollm.encode(text, add_special_tokens=False).tokens
        case["decoded_smollm"] = tok.decode(ids_smollm)
    return case


def special_info(tok, meta: dict) -> dict:
    added = getattr(tok, "added_tokens_decoder", {}) or {}
    vocab = tok.get_vocab()
    digit_like = [
        t
        for t in vocab
        if (len(t.lstrip("Ġ")) > 1 and t.lstrip("Ġ").isdigit()) or (t[:1] == "Ġ" and t[1:].isdigit())
    ]
    return {
        "vocab_size": len(tok),
        "bos_token": tok.bos_token,
        "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token,
        "eos_token_id": tok.eos_token_id,
        "unk_token": tok.unk_token,
        "unk_token_id": tok.unk_token_id,
        "pad_token": tok.pad_token,
        "pad_token_id": tok.pad_token_id,
        "all_special_tokens": {t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens},
        "added_tokens": {str(i): t.content for i, t in sorted(added.items())},
        "gguf": {k: v for k, v in meta.items() if k != "tokenizer.chat_template"},
        "hf_backend": {
            "class": type(tok).__name__,
            "pre_tokenizer": repr(tok.backend_tokenizer.pre_tokenizer),
            "normalizer": repr(tok.backend_tokenizer.normalizer),
            "decoder": repr(tok.backend_tokenizer.decoder),
        },
        "vocab_tokens_with_multiple_digits_or_space_digit": sorted(digit_like),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=default_model_path(), help="GGUF path")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "tests" / "fixtures" / "tokenizer" / "smollm2.json"
    )
    args = parser.parse_args()

    path = check_model(args.model)
    tok = load_tokenizer(path)
    meta = gguf_metadata(path, GGUF_TOKENIZER_KEYS)
    template = meta["tokenizer.chat_template"]
    smollm = smollm_pretokenizer_backend(tok)

    chat = []
    for name, messages in CONVERSATIONS:
        for add_gen in (False, True):
            text = tok.apply_chat_template(messages, add_generation_prompt=add_gen, tokenize=False)
            chat.append(
                {
                    "name": name,
                    "messages": messages,
                    "add_generation_prompt": add_gen,
                    "rendered": text,
                    "ids": tok.encode(text, add_special_tokens=False),
                    "ids_smollm": smollm.encode(text, add_special_tokens=False).ids,
                }
            )

    fixture = {
        "generator": "scripts/reference/make_tokenizer_fixtures.py",
        "model": model_info(path),
        "versions": versions(),
        "notes": "ids = tokenizer.encode(text, add_special_tokens=False); decoded = "
        "tokenizer.decode(ids) (special tokens kept); pieces are byte-level BPE token strings. "
        "ids_smollm = the same vocab/merges with the pre-tokenizer the GGUF names "
        "(tokenizer.ggml.pre = 'smollm': split each \\p{N} char off first, then the GPT-2 "
        "regex, as llama.cpp and the original SmolLM2 tokenizer.json do); transformers' GGUF "
        "converter uses the GPT-2 regex alone, so the two differ on whitespace runs or a "
        "space directly before a numeric char. smollm_differs flags those cases.",
        "special": special_info(tok, meta),
        "cases": [encode_case(tok, smollm, s) for s in STRINGS],
        "with_special": [
            {"text": s, "ids": tok.encode(s, add_special_tokens=True)} for s in WITH_SPECIAL
        ],
        "chat_template": template,
        "chat_template_matches_hf": tok.chat_template == template,
        "chat": chat,
    }
    write_json(args.out, fixture)
    differ = [c["text"] for c in fixture["cases"] if c["smollm_differs"]]
    print(f"HF and smollm pre-tokenization differ on: {differ!r}", file=sys.stderr)
    bad = [c["text"] for c in fixture["cases"] if not c["roundtrip"]]
    print(f"{len(fixture['cases'])} cases, {len(bad)} do not round-trip: {bad!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
