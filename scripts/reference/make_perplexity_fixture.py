#!/usr/bin/env python3
"""Perplexity reference numbers for `rtllm eval perplexity`, made with HF transformers.

The text is the opening of Pride and Prejudice (public domain): its title and Chapter 1, cut
from the book scripts/fetch-eval-text.sh fetches (everything before the "Chapter 2" line). HF
transformers loads the default model (SmolLM2-135M-Instruct Q4_1 GGUF, dequantized to f32) and
scores the text with the sliding windows of Hugging Face's perplexity guide
(https://huggingface.co/docs/transformers/perplexity): windows of CONTEXT tokens starting every
STRIDE tokens, each scoring only the tokens no earlier window scored (a window's first token
never: it has no context). Per window the NLL is summed two ways that must agree: from the
log-softmax of the logits, and as the guide does, `model(input_ids, labels=target_ids).loss`
(targets outside the window's new tokens set to -100) times the number of targets it averaged.

Run (model from scripts/fetch-default-model.sh, text from scripts/fetch-eval-text.sh, Python env
from scripts/reference/requirements.txt):

    /work/pyenv/bin/python scripts/reference/make_perplexity_fixture.py \\
        --model "$(scripts/fetch-default-model.sh)" --book "$(scripts/fetch-eval-text.sh)"

Writes tests/fixtures/eval/pride_and_prejudice_ch1.txt (the text) and
tests/fixtures/eval/smollm2_perplexity.json: the HF token ids of the text (no BOS is added for
this model), and per (context, stride) setting the windows, tokens scored, NLL sum, mean NLL and
perplexity, and each window's NLL sum.
"""

from __future__ import annotations

import argparse
import math
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
    smollm_pretokenizer_backend,
    versions,
    write_json,
)

OUT_DIR = REPO_ROOT / "tests" / "fixtures" / "eval"
TEXT_NAME = "pride_and_prejudice_ch1.txt"
# (context, stride): overlapping windows (the guide's stride = context / 2), a small stride,
# and disjoint windows (each window's first token unscored).
SETTINGS = [(256, 128), (192, 64), (300, 300)]


def windows(n: int, context: int, stride: int):
    """The guide's loop: (begin, end, first scored position)."""
    out, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + context, n)
        score_from = max(prev_end, begin + 1)
        if score_from < end:
            out.append((begin, end, score_from))
        prev_end = end
        if end == n:
            return out
        begin += stride


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=default_model_path())
    ap.add_argument("--book", type=Path, required=True, help="prideprejudice.txt from scripts/fetch-eval-text.sh")
    args = ap.parse_args()
    model_path = check_model(args.model)

    book = args.book.read_text(encoding="utf-8")
    text = book[: book.index("Chapter 2")]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / TEXT_NAME).write_text(text, encoding="utf-8")

    tok = load_tokenizer(model_path)
    ids = tok(text, add_special_tokens=True)["input_ids"]
    smollm_ids = smollm_pretokenizer_backend(tok).encode(text).ids
    model = load_model(model_path)

    results = []
    for context, stride in SETTINGS:
        per_window, nll_sum, scored = [], 0.0, 0
        for begin, end, score_from in windows(len(ids), context, stride):
            input_ids = torch.tensor([ids[begin:end]])
            targets = input_ids.clone()
            targets[:, : score_from - begin] = -100
            with torch.no_grad():
                out = model(input_ids, labels=targets)
            logp = torch.log_softmax(out.logits[0].double(), dim=-1)
            window_nll = -sum(float(logp[p - 1 - begin, ids[p]]) for p in range(score_from, end))
            n = end - score_from
            # The guide's number: the mean loss over the n shifted targets, times n.
            via_loss = float(out.loss) * n
            assert abs(via_loss - window_nll) < 1e-3 * max(1.0, abs(window_nll)), (via_loss, window_nll)
            per_window.append({"begin": begin, "end": end, "score_from": score_from, "nll_sum": window_nll})
            nll_sum += window_nll
            scored += n
        mean = nll_sum / scored
        results.append(
            {
                "context_len": context,
                "stride": stride,
                "windows": len(per_window),
                "tokens_scored": scored,
                "nll_sum": nll_sum,
                "mean_nll": mean,
                "perplexity": math.exp(mean),
                "per_window": per_window,
            }
        )
        print(f"context {context} stride {stride}: {scored} tokens, ppl {math.exp(mean):.4f}", file=sys.stderr)

    write_json(
        OUT_DIR / "smollm2_perplexity.json",
        {
            "about": "HF transformers sliding-window perplexity of the default model over " + TEXT_NAME,
            "model": model_info(model_path),
            "versions": versions(),
            "text_file": TEXT_NAME,
            "token_ids": ids,
            "token_ids_match_smollm_pretokenizer": ids == smollm_ids,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
