#!/usr/bin/env python3
"""PyTorch/transformers `generate` baseline for rtllm's CUDA backend (random bf16 weights).

Measures, in one run on one device:
  1. device-to-device copy bandwidth (CUDA events; TB/s counting bytes read + written),
  2. batch-1 greedy decode tok/s of a LlamaForCausalLM built from an HF config.json
     (prefill timed separately; median of --runs runs after a warm-up), with the
     weight-bandwidth roofline (bandwidth / weight bytes per decode token),
  3. batched throughput: --concurrency requests of --input-len tokens generating
     --output-len tokens each, as one batched generate call (halving the batch on OOM),
  4. optionally static KV cache + torch.compile batch-1 decode, in a child process that is
     killed after --compile-timeout seconds (the eager path stays the main baseline).
Prints a table at the end and writes every number to --json.

Usage:
  python3 scripts/bench/torch_baseline.py --config scripts/bench/configs/llama-3.2-1b.json \
      --json OUT.json [--batch-1-tokens 128] [--concurrency 256 --input-len 128 --output-len 128]
  (--device cpu with a tiny config runs everything end to end on a CPU, 64 MiB copies.)
Dependencies: python3 stdlib, torch, transformers.
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def log(msg):
    print(f"[torch_baseline {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="path to an HF config.json (LlamaForCausalLM)")
    p.add_argument("--json", required=True, help="where to write every measured number")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--prompt-len", type=int, default=128, help="batch-1 prompt length (tokens)")
    p.add_argument("--batch-1-tokens", type=int, default=128, help="batch-1 new tokens N")
    p.add_argument("--runs", type=int, default=3, help="timed batch-1 runs (median reported)")
    p.add_argument("--warmups", type=int, default=2, help="untimed batch-1 warm-up runs")
    p.add_argument("--concurrency", type=int, default=256, help="throughput requests")
    p.add_argument("--input-len", type=int, default=128, help="throughput prompt length")
    p.add_argument("--output-len", type=int, default=128, help="throughput new tokens per request")
    p.add_argument("--throughput-runs", type=int, default=3,
                   help="timed throughput runs (median wall reported)")
    p.add_argument("--bw-mib", type=int, default=None,
                   help="copy buffer size in MiB (default 2048 on cuda, 64 on cpu)")
    p.add_argument("--bw-copies", type=int, default=20, help="timed copies")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-compile", action="store_true", help="skip static cache + torch.compile")
    p.add_argument("--compile-timeout", type=float, default=180.0,
                   help="seconds the static-cache + torch.compile child may take in all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("prompt_len", "batch_1_tokens", "runs", "warmups", "concurrency", "input_len",
                 "output_len", "throughput_runs", "bw_copies"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_1_tokens < 2:
        p.error("--batch-1-tokens must be >= 2 (decode rate uses N-1 tokens after the first)")
    if not os.path.isfile(args.config):
        p.error(f"--config {args.config}: no such file")
    return args


# ----------------------------------------------------------------------------------------------
# device helpers


def sync(device):
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device, fn):
    """Wall time of fn() in seconds, synchronising the device before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def env_info(device):
    import torch
    import transformers
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "device": device,
            "host": platform.node()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    sm_count=props.multi_processor_count)
    else:
        info.update(cpu_threads=torch.get_num_threads())
    return info


# ----------------------------------------------------------------------------------------------
# 1. copy bandwidth


def measure_bandwidth(device, mib, copies):
    import torch
    nbytes = mib * 2**20
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    src.random_(0, 256) if device == "cpu" else src.fill_(7)
    dst = torch.empty_like(src)
    for _ in range(3):  # warm-up
        dst.copy_(src)
    sync(device)
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(copies):
            dst.copy_(src)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        method = "cuda events around back-to-back Tensor.copy_ calls"
    else:
        t0 = time.perf_counter()
        for _ in range(copies):
            dst.copy_(src)
        seconds = time.perf_counter() - t0
        method = "perf_counter around back-to-back Tensor.copy_ calls"
    ok = bool(torch.equal(dst[:4096], src[:4096]))
    del src, dst
    release(device)
    moved = 2 * nbytes * copies  # each copy reads and writes nbytes
    return {"buffer_bytes": nbytes, "copies": copies, "seconds": seconds,
            "bytes_moved": moved, "tb_per_s": moved / seconds / 1e12,
            "counting": "2*bytes per copy (read + write)", "method": method, "verified": ok}


# ----------------------------------------------------------------------------------------------
# 2. model


def load_config(path):
    from transformers import AutoConfig
    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise SystemExit(f"{path}: not an HF config.json (no model_type)")
    model_type = raw.pop("model_type")
    for key in ("architectures", "transformers_version"):
        raw.pop(key, None)
    try:
        cfg = AutoConfig.for_model(model_type, **raw)
    except ValueError as e:
        raise SystemExit(f"{path}: {e}")
    return cfg


def build_model(cfg, device):
    """LlamaForCausalLM-style model from cfg, random bf16 weights created on `device`."""
    import torch
    from transformers import AutoModelForCausalLM
    t0 = time.perf_counter()
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16,
                                                     attn_implementation="sdpa")
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16,
                                                     attn_implementation="sdpa")
    model.to(device=device, dtype=torch.bfloat16)  # no-op when already there
    model.eval()
    torch.manual_seed(1234)
    with torch.no_grad():  # small normal weights keep activations finite; norms at 1
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
            elif param.dim() == 1:
                param.zero_()
            else:
                param.normal_(mean=0.0, std=0.02)
    gen = model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else cfg.eos_token_id
    eos0 = eos[0] if isinstance(eos, (list, tuple)) else eos
    if gen.pad_token_id is None:
        gen.pad_token_id = eos0 if eos0 is not None else 0
    sync(device)
    build_s = time.perf_counter() - t0

    params = list(model.parameters())  # de-duplicated: a tied embedding appears once
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
    # An untied input embedding is only gathered (one row per token), not streamed.
    streamed = weight_bytes - (0 if tied else emb.numel() * emb.element_size())
    attn = getattr(model.config, "_attn_implementation", None)
    info = {"class": type(model).__name__, "dtype": str(next(iter(params)).dtype),
            "param_device": str(next(iter(params)).device), "attn_implementation": attn,
            "param_count": sum(p.numel() for p in params), "weight_bytes": weight_bytes,
            "weight_bytes_streamed_per_token": streamed, "tied_embeddings": tied,
            "build_s": build_s}
    return model, info


def sanity_forward(model, cfg, device):
    import torch
    ids = torch.randint(0, cfg.vocab_size, (1, 16), device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    finite = bool(torch.isfinite(logits).all())
    if not finite:
        raise SystemExit("random-weight model produced non-finite logits")
    return {"logits_finite": finite, "logits_abs_max": float(logits.abs().max())}


def greedy(model, ids, mask, new_tokens, **extra):
    import torch
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                             num_beams=1, pad_token_id=model.generation_config.pad_token_id,
                             **extra)
    expect = ids.shape[1] + new_tokens
    if out.shape[1] != expect:
        raise RuntimeError(f"generate returned {out.shape[1]} positions, expected {expect}")
    return out


# ----------------------------------------------------------------------------------------------
# 3. batch-1 decode


def bench_batch1(model, cfg, device, prompt_len, n_tokens, runs, warmups=1, **extra):
    import torch
    ids = torch.randint(0, cfg.vocab_size, (1, prompt_len), device=device)
    mask = torch.ones_like(ids)
    warm = []
    for w in range(warmups):
        log(f"batch-1 warm-up {w + 1}/{warmups} (prompt {prompt_len}, {n_tokens} new tokens)")
        warm.append(timed(device, lambda: greedy(model, ids, mask, n_tokens, **extra))[0])
        greedy(model, ids, mask, 1, **extra)
    prefill, total = [], []
    for r in range(runs):
        for _ in range(2):  # prefill is cheap: two samples per run
            prefill.append(timed(device, lambda: greedy(model, ids, mask, 1, **extra))[0])
        t, out = timed(device, lambda: greedy(model, ids, mask, n_tokens, **extra))
        total.append(t)
        log(f"batch-1 run {r + 1}/{runs}: total {t:.3f} s, prefill {prefill[-1] * 1e3:.1f} ms")
    p_med, t_med = statistics.median(prefill), statistics.median(total)
    per_run = [(n_tokens - 1) / (t - p_med) for t in total]
    decode_s = t_med - p_med
    if decode_s <= 0:
        raise RuntimeError("decode time came out non-positive (prefill >= total)")
    tok_s = (n_tokens - 1) / decode_s
    return {"prompt_len": prompt_len, "new_tokens": n_tokens, "runs": runs,
            "warmup_s": warm, "prefill_s": prefill, "total_s": total,
            "prefill_s_median": p_med, "total_s_median": t_med,
            "decode_tok_s": tok_s, "decode_ms_per_token": 1e3 / tok_s,
            "decode_tok_s_per_run": per_run, "decode_tok_s_best": max(per_run),
            "formula": "(N-1) / (median total - median prefill); prefill = generate(1 token)"}


# ----------------------------------------------------------------------------------------------
# 4. throughput


def left_pad(prompts, pad_id, device):
    """Batch of variable-length prompts, left padded, with the matching attention mask."""
    import torch
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def bench_throughput(model, cfg, device, concurrency, input_len, output_len, runs):
    import torch
    gen = torch.Generator().manual_seed(4321)
    prompts = torch.randint(0, cfg.vocab_size, (concurrency, input_len), generator=gen).tolist()
    pad_id = model.generation_config.pad_token_id
    state = {"batch": concurrency, "halvings": []}

    def with_oom_halving(where, fn):
        """fn(batch) until it fits; an OOM frees the cache and halves the batch."""
        while True:
            try:
                return fn(state["batch"])
            except torch.OutOfMemoryError:
                pass
            # Out of memory. Outside the except block the failed call's tensors are released.
            release(device)
            if state["batch"] == 1:
                raise RuntimeError(f"throughput: out of memory at batch 1 ({where})")
            log(f"throughput: out of memory at batch {state['batch']} ({where}); halving")
            state["halvings"].append({"batch": state["batch"], "where": where})
            state["batch"] //= 2

    def warm(batch):
        # One full-length untimed call: the first one at a new KV size is several times slower
        # (allocator growth, kernel selection for new shapes); it also finds an OOM early.
        ids, mask = left_pad(prompts[:batch], pad_id, device)
        log(f"throughput warm-up: batch {batch}, {output_len} new tokens")
        t, out = timed(device, lambda: greedy(model, ids, mask, output_len))
        del out
        return t

    def all_requests(batch):
        calls = []
        for start in range(0, concurrency, batch):
            chunk = prompts[start:start + batch]
            ids, mask = left_pad(chunk, pad_id, device)
            t, out = timed(device, lambda: greedy(model, ids, mask, output_len))
            del out
            calls.append({"requests": len(chunk), "wall_s": t})
        return calls

    warmup_s = with_oom_halving("warm-up", warm)
    per_run = []
    for r in range(runs):
        calls = with_oom_halving(f"run {r + 1}", all_requests)
        per_run.append({"batch_size": state["batch"], "calls": calls,
                        "wall_s": sum(c["wall_s"] for c in calls)})
        log(f"throughput run {r + 1}/{runs}: {concurrency} requests x {input_len} in -> "
            f"{output_len} out, {len(calls)} call(s), wall {per_run[-1]['wall_s']:.2f} s")
    batch = state["batch"]
    n_calls = len(per_run[-1]["calls"])
    wall = statistics.median(p["wall_s"] for p in per_run)
    produced = concurrency * output_len
    note = ("one batched generate call" if n_calls == 1 else
            f"OOM at batch {concurrency}: ran {n_calls} batched calls of <= {batch} requests")
    return {"concurrency": concurrency, "input_len": input_len, "output_len": output_len,
            "batch_size": batch, "n_calls": n_calls, "oom_halvings": state["halvings"],
            "warmup_s": warmup_s, "runs": per_run, "note": note, "wall_s": wall,
            "wall_s_per_run": [p["wall_s"] for p in per_run], "output_tokens": produced,
            "output_tok_s": produced / wall,
            "total_tok_s": (produced + concurrency * input_len) / wall,
            "formula": "concurrency*output_len / median wall over runs (prefill included)",
            "padding": "left, attention mask (all prompts equal length: no pad tokens)"}


def release(device):
    import gc
    import torch
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# 5. static cache + torch.compile (child process, killed on timeout)


def run_compile_child(args, budget_s):
    fd, out_path = tempfile.mkstemp(prefix="torch_baseline_compile_", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--compile-child", "--config", args.config,
           "--json", out_path, "--device", args.device, "--prompt-len", str(args.prompt_len),
           "--batch-1-tokens", str(args.batch_1_tokens), "--runs", str(args.runs),
           "--warmups", str(args.warmups),
           "--seed", str(args.seed)]
    log(f"static cache + torch.compile in a child process (limit {budget_s:.0f} s)")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc = proc.wait(timeout=budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its compile workers
        proc.wait()
        os.unlink(out_path)
        reason = f"did not finish within {budget_s:.0f} s (killed)"
        log(f"static cache + torch.compile skipped: {reason}")
        return {"status": "skipped", "reason": reason, "elapsed_s": time.perf_counter() - t0}
    try:
        with open(out_path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        result = {"status": "failed", "reason": f"child exited {rc} without a result"}
    finally:
        os.unlink(out_path)
    result["elapsed_s"] = time.perf_counter() - t0
    if result.get("status") != "ok":
        log(f"static cache + torch.compile skipped: {result.get('reason')}")
    return result


def compile_child(args):
    """Batch-1 decode with a static KV cache and a compiled forward; writes its own JSON."""
    import torch
    result = {"status": "failed", "reason": "unknown"}
    try:
        torch.manual_seed(args.seed)
        cfg = load_config(args.config)
        model, _ = build_model(cfg, args.device)
        if args.device == "cuda" and hasattr(model, "_valid_auto_compile_criteria"):
            # generate() compiles the decode forward itself for a static cache on CUDA
            # (CompileConfig: inductor, mode reduce-overhead = CUDA graphs).
            method = "generate auto-compile (static cache, generation_config.compile_config)"
        else:
            model.forward = torch.compile(model.forward, mode="reduce-overhead", dynamic=False)
            method = "model.forward = torch.compile(mode='reduce-overhead')"
        log(f"compile child: {method}")
        t0 = time.perf_counter()
        b1 = bench_batch1(model, cfg, args.device, args.prompt_len, args.batch_1_tokens,
                          args.runs, max(2, args.warmups), cache_implementation="static")
        result = {"status": "ok", "method": method, "batch1": b1,
                  "first_generate_incl_compile_s": b1["warmup_s"][0],
                  "bench_s": time.perf_counter() - t0}
    except Exception as e:  # any failure means "skip with a reason", never a crash of the parent
        result = {"status": "failed", "reason": f"{type(e).__name__}: {str(e)[:500]}"}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    return 0


# ----------------------------------------------------------------------------------------------
# report


def table(res):
    rows = []
    bw = res["bandwidth"]
    rows.append(("D2D copy bandwidth", f"{bw['tb_per_s']:.3f} TB/s",
                 f"{bw['buffer_bytes'] / 2**20:.0f} MiB x {bw['copies']}, 2*bytes/time"))
    m = res["model"]
    rows.append(("weights / decode token", f"{m['weight_bytes'] / 1e6:.1f} MB",
                 f"{m['param_count'] / 1e6:.1f} M params, tied={m['tied_embeddings']}"))
    b1 = res["batch1"]
    rows.append(("batch-1 prefill", f"{b1['prefill_s_median'] * 1e3:.1f} ms",
                 f"prompt {b1['prompt_len']} tokens"))
    rows.append(("batch-1 decode (eager)", f"{b1['decode_tok_s']:.1f} tok/s",
                 f"{b1['decode_ms_per_token']:.2f} ms/token, N={b1['new_tokens']}, "
                 f"best run {b1['decode_tok_s_best']:.1f}"))
    rows.append(("roofline (bw / weights)", f"{b1['roofline_tok_s']:.1f} tok/s",
                 f"achieved {100 * b1['roofline_fraction']:.1f}%"))
    tp = res.get("throughput")
    if tp:
        rows.append(("throughput (eager)", f"{tp['output_tok_s']:.1f} out tok/s",
                     f"{tp['concurrency']} x {tp['input_len']}->{tp['output_len']}, "
                     f"wall {tp['wall_s']:.2f} s, {tp['note']}"))
    c = res.get("compiled")
    if c and c.get("status") == "ok":
        cb = c["batch1"]
        rows.append(("batch-1 decode (static+compile)", f"{cb['decode_tok_s']:.1f} tok/s",
                     f"{cb['decode_ms_per_token']:.2f} ms/token, "
                     f"{100 * cb['roofline_fraction']:.1f}% of roofline"))
    elif c:
        rows.append(("batch-1 decode (static+compile)", c["status"], c.get("reason", "")))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    env = res["env"]
    head = (f"torch {env['torch']}, transformers {env['transformers']}, "
            f"{env.get('gpu', 'cpu')}, config {res['config']['path']}")
    lines = [head, "-" * len(head)]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c_}" for a, b, c_ in rows]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.compile_child:
        return compile_child(args)
    t_start = time.perf_counter()
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False (use --device cpu)")
    torch.manual_seed(args.seed)
    res = {"env": env_info(args.device), "args": vars(args)}
    log(f"env: {res['env']}")

    mib = args.bw_mib or (2048 if args.device == "cuda" else 64)
    log(f"copy bandwidth: {mib} MiB buffers, {args.bw_copies} timed copies")
    res["bandwidth"] = measure_bandwidth(args.device, mib, args.bw_copies)
    log(f"copy bandwidth: {res['bandwidth']['tb_per_s']:.3f} TB/s")

    cfg = load_config(args.config)
    res["config"] = {"path": args.config, **{k: getattr(cfg, k, None) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings",
        "max_position_embeddings", "rope_theta", "rope_scaling", "rope_parameters")}}
    log("building model (random bf16 weights on the device)")
    model, res["model"] = build_model(cfg, args.device)
    res["model"]["sanity"] = sanity_forward(model, cfg, args.device)
    log(f"model: {res['model']['param_count'] / 1e6:.1f} M params, "
        f"{res['model']['weight_bytes'] / 1e6:.1f} MB, built in {res['model']['build_s']:.1f} s")

    bw_bytes_s = res["bandwidth"]["tb_per_s"] * 1e12
    roof = bw_bytes_s / res["model"]["weight_bytes"]

    def add_roofline(b1):
        b1["roofline_tok_s"] = roof
        b1["roofline_fraction"] = b1["decode_tok_s"] / roof
        return b1

    res["batch1"] = add_roofline(bench_batch1(model, cfg, args.device, args.prompt_len,
                                              args.batch_1_tokens, args.runs, args.warmups))
    log(f"batch-1 decode: {res['batch1']['decode_tok_s']:.1f} tok/s "
        f"({100 * res['batch1']['roofline_fraction']:.1f}% of {roof:.0f} tok/s roofline)")

    if not args.skip_throughput:
        res["throughput"] = bench_throughput(model, cfg, args.device, args.concurrency,
                                             args.input_len, args.output_len,
                                             args.throughput_runs)
        log(f"throughput: {res['throughput']['output_tok_s']:.1f} output tok/s, "
            f"wall {res['throughput']['wall_s']:.2f} s")

    del model
    release(args.device)
    if args.skip_compile:
        res["compiled"] = {"status": "skipped", "reason": "--skip-compile"}
    else:
        res["compiled"] = run_compile_child(args, args.compile_timeout)
        if res["compiled"].get("status") == "ok":
            add_roofline(res["compiled"]["batch1"])

    res["total_runtime_s"] = time.perf_counter() - t_start
    with open(args.json, "w") as f:
        json.dump(res, f, indent=2, default=str)
    print(table(res), flush=True)
    log(f"wrote {args.json} (total {res['total_runtime_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
