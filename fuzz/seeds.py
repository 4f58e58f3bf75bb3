#!/usr/bin/env python3
"""Writes the seed corpus of one fuzz target (scripts/fuzz.sh runs it before fuzzing).

Usage: seeds.py TARGET DIR   (TARGET: gguf safetensors toml_model plan_json http_json)

Seeds are small, valid inputs of each format (plus a few near misses), written from scratch
here so nothing large or binary lives in git: a 2-layer llama GGUF with f32/f16/q8_0 tensors
and a BPE tokenizer, safetensors files of each dtype, the repository's TOML model definitions,
a plan.json of a tiny engine (`rtllm build` of the tiny-llama dummy when a built rtllm binary
is around, else a hand-written one) and OpenAI request bodies.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---------------------------------------------------------------- GGUF
def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(v):
    """(type id, payload) of a metadata value: str, bool, int (u32), float (f32), list."""
    if isinstance(v, bool):
        return 7, struct.pack("<?", v)
    if isinstance(v, int):
        return 4, struct.pack("<I", v)
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, str):
        return 8, gguf_str(v)
    items = [gguf_value(x) for x in v]
    kind = items[0][0] if items else 4
    return 9, struct.pack("<IQ", kind, len(items)) + b"".join(p for _, p in items)


def gguf(meta, tensors, version=3, align=32):
    """tensors: (name, ggml type, dims (ggml order: fastest first), data bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(meta))
    for k, v in meta.items():
        kind, payload = gguf_value(v)
        out += gguf_str(k) + struct.pack("<I", kind) + payload
    offset = 0
    for name, kind, dims, data in tensors:
        out += gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", kind, offset)
        offset += (len(data) + align - 1) // align * align
    out += b"\0" * (-len(out) % align)
    for _, _, _, data in tensors:
        out += data + b"\0" * (-len(data) % align)
    return out


def f32s(n, scale=0.01):
    return struct.pack(f"<{n}f", *[((i * 7) % 13 - 6) * scale for i in range(n)])


def f16s(n):
    return struct.pack(f"<{n}e", *[((i * 5) % 11 - 5) * 0.01 for i in range(n)])


def q8_0(n):  # blocks of 32: f16 scale + 32 int8
    return b"".join(struct.pack("<e", 0.01) + bytes((i * 3) % 256 for i in range(32)) for _ in range(n // 32))


def tiny_llama(arch="llama", ffn_type=0, layers=2):
    hidden, heads, kv, ffn = 32, 4, 2, 64
    tokens = ["<unk>", "<s>", "</s>", "a", "b", "Ġ", "Ġa", "ab", "Ġab", "H", "e", "l", "o", ","]
    meta = {
        "general.architecture": arch,
        "general.name": "tiny",
        f"{arch}.context_length": 256,
        f"{arch}.embedding_length": hidden,
        f"{arch}.block_count": layers,
        f"{arch}.feed_forward_length": ffn,
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
        f"{arch}.rope.freq_base": 10000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["a b", "Ġ a", "Ġa b"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
    }
    mat = {0: (0, f32s), 1: (1, f16s), 8: (8, q8_0)}[ffn_type]
    t = [("token_embd.weight", 8, [hidden, len(tokens) + 2], q8_0(hidden * (len(tokens) + 2))),
         ("output_norm.weight", 0, [hidden], f32s(hidden))]
    for l in range(layers):
        for n, rows, cols in [("attn_q", heads * 8, hidden), ("attn_k", kv * 8, hidden), ("attn_v", kv * 8, hidden),
                              ("attn_output", hidden, heads * 8), ("ffn_gate", ffn, hidden), ("ffn_up", ffn, hidden),
                              ("ffn_down", hidden, ffn)]:
            t.append((f"blk.{l}.{n}.weight", mat[0], [cols, rows], mat[1](rows * cols)))
        t.append((f"blk.{l}.attn_norm.weight", 0, [hidden], f32s(hidden)))
        t.append((f"blk.{l}.ffn_norm.weight", 0, [hidden], f32s(hidden)))
    return gguf(meta, t)


def seed_gguf(out):
    write(out, "llama_f32.gguf", tiny_llama(ffn_type=0, layers=1))
    write(out, "llama_f16.gguf", tiny_llama(ffn_type=1, layers=1))
    write(out, "qwen2_q8.gguf", tiny_llama(arch="qwen2", ffn_type=8, layers=1))
    write(out, "v2_meta_only.gguf", gguf({"general.architecture": "llama", "llama.block_count": 1}, [], version=2))
    write(out, "truncated.gguf", tiny_llama()[:700])
    default = os.path.join(os.environ.get("RTLLM_CACHE_DIR", os.path.expanduser("~/.cache/rtllm")),
                           "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.isfile(default):  # the real header's start (metadata, vocab)
        with open(default, "rb") as f:
            write(out, "smollm2_head.gguf", f.read(60000))


# ---------------------------------------------------------------- safetensors
def safetensors(entries, metadata=None):
    header, data = {}, b""
    for name, dtype, shape, raw in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def seed_safetensors(out):
    write(out, "f32.safetensors", safetensors([("model.norm.weight", "F32", [4, 8], f32s(32))], {"format": "pt"}))
    write(out, "mixed.safetensors", safetensors([
        ("a", "F16", [2, 32], f16s(64)), ("b", "BF16", [16], b"\x80\x3f" * 16), ("c", "I32", [3], b"\1\0\0\0" * 3),
        ("d", "Q8_0", [1, 32], q8_0(32)), ("e", "F64", [2], struct.pack("<2d", 1.0, 2.0)), ("f", "U8", [5], b"abcde")]))
    write(out, "empty.safetensors", safetensors([]))
    write(out, "bad_offsets.safetensors", safetensors([("x", "F32", [4], f32s(4))])[:-3])


# ---------------------------------------------------------------- TOML model definitions
def seed_toml(out):
    examples = [os.path.join("examples", d) for d in sorted(os.listdir(os.path.join(ROOT, "examples")))]
    for rel in ["models/configs", "examples/custom-kernel-plugin/models"] + examples:
        d = os.path.join(ROOT, rel)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                if name.endswith(".toml") and name != "Cargo.toml":
                    shutil.copy(os.path.join(d, name), os.path.join(out, name))
    write(out, "small.toml", """[model]
name = "small"
[values]
scale = "1.0 / sqrt(config.head_dim) * (2 - -1)"
[inputs]
ids = { dtype = "i32", dims = ["T"] }
[weights]
embed = "model.embed_tokens.weight"
norm = "model.layers.{layer}.input_layernorm.weight"
[blocks.norm]
params = ["x", "w"]
results = ["y"]
  [[blocks.norm.body]]
  op = "rmsnorm"
  inputs = ["x", "w"]
  outputs = ["y"]
  attrs = { eps = "config.rms_norm_eps", scale = "scale", dims = [1, "config.hidden_size"] }
[[graph]]
op = "embedding"
inputs = ["ids", "embed"]
outputs = ["x"]
[[graph]]
repeat = "config.num_hidden_layers"
scope = "layer {layer}"
  [[graph.body]]
  call = "norm"
  inputs = ["x", "norm"]
  outputs = ["x"]
  [[graph.body]]
  if_op_registered = "fused_norm"
  op = "fused_norm"
  inputs = ["x"]
  outputs = ["x", "_"]
    [[graph.body.else]]
    set = "y"
    from = "x"
[outputs]
logits = "x"
""")


# ---------------------------------------------------------------- plan.json
def seed_plan(out):
    for exe in ["target/debug/rtllm", "target/release/rtllm"]:
        exe = os.path.join(ROOT, exe)
        if not os.access(exe, os.X_OK):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            engine = os.path.join(tmp, "engine")
            r = subprocess.run([exe, "build", "--dummy-weights", "tiny-llama", "--max-batch-size", "2",
                                "--max-num-tokens", "64", "--max-seq-len", "64", "--output", engine],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RTLLM_LOG="off"))
            if r.returncode == 0:
                shutil.copy(os.path.join(engine, "plan.json"), os.path.join(out, "tiny_llama_plan.json"))
                break
    meta = {"dtype": "f32", "dims": [{"Known": 4}]}
    write(out, "hand.json", json.dumps({
        "format_version": 1, "rtllm_version": "0.1.0", "definition": "llama",
        "model_config": {}, "build": {"device": "cpu", "kv_cache_dtype": "f32", "kv_cache_bytes": 1024, "pins": [],
                                      "disabled_ops": [], "weight_fallback_dtype": None, "dequantize_weights": False},
        "limits": {"max_batch_size": 1, "max_num_tokens": 8, "max_seq_len": 8, "tokens_per_block": 4, "num_kv_blocks": 2},
        "memory": {"arena_bytes": 64, "unshared_bytes": 64, "planned_values": 1, "weight_bytes": 16, "kv_bytes_per_block": 8},
        "values": [{"meta": meta, "source": {"Input": {"name": "input_ids"}}}],
        "inputs": [["input_ids", 0]], "outputs": [["logits", 0]], "nodes": [], "weights": []}, indent=1))


# ---------------------------------------------------------------- HTTP JSON bodies
def seed_http(out):
    bodies = [
        {"model": "m", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "stream": True,
         "stream_options": {"include_usage": True}, "stop": ["\n", "The"], "seed": 1, "logprobs": 2, "n": 2},
        {"prompt": [1, 2, 3], "max_tokens": 1, "stop": "x", "echo": True, "ignore_eos": True},
        {"prompt": ["a", "b"], "top_k": 5, "min_p": 0.1, "frequency_penalty": 0.5, "presence_penalty": -0.5},
        {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
         "max_completion_tokens": 8, "logprobs": True, "top_logprobs": 3},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}], "stream": False},
    ]
    for i, b in enumerate(bodies):
        write(out, f"body{i}.json", json.dumps(b))
    write(out, "bad.json", '{"prompt": "a", "max_tokens": -1, "temperature": 1e999}')


SEEDS = {"gguf": seed_gguf, "safetensors": seed_safetensors, "toml_model": seed_toml, "plan_json": seed_plan,
         "http_json": seed_http}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SEEDS:
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    SEEDS[sys.argv[1]](sys.argv[2])
