#!/usr/bin/env python3
"""KV cache bytes per token of a GGUF model: layers x (K, V) x kv heads x head dim x element bytes.

Usage: kv-bytes.py MODEL.gguf [ELEM_BYTES]   (ELEM_BYTES: the KV cache dtype's size, default 4: f32)
Reads only the GGUF header's metadata (no dependencies); prints one integer.
"""
import struct
import sys

# GGUF metadata value types: fixed-size scalars by struct code, 8 = string, 9 = array.
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read(f, fmt):
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)[0]


def value(f, vtype):
    if vtype in SCALARS:
        return read(f, SCALARS[vtype])
    if vtype == 8:
        return f.read(read(f, "Q")).decode("utf-8", "replace")
    if vtype == 9:
        item, count = read(f, "I"), read(f, "Q")
        if item in SCALARS:  # skip numeric arrays without decoding them
            f.seek(count * struct.calcsize("<" + SCALARS[item]), 1)
            return None
        for _ in range(count):
            value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {vtype}")


def metadata(path):
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        read(f, "I")  # version
        read(f, "Q")  # tensor count
        meta = {}
        for _ in range(read(f, "Q")):
            key = f.read(read(f, "Q")).decode("utf-8", "replace")
            meta[key] = value(f, read(f, "I"))
        return meta


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    elem = int(sys.argv[2]) if len(sys.argv) == 3 else 4
    try:
        meta = metadata(sys.argv[1])
    except (OSError, ValueError) as e:
        sys.exit(f"kv-bytes: {e}")
    arch = meta.get("general.architecture")
    get = lambda k: meta.get(f"{arch}.{k}")
    layers, heads, embd = get("block_count"), get("attention.head_count"), get("embedding_length")
    if not (layers and heads and embd):
        sys.exit(f"{sys.argv[1]}: no {arch}.block_count / attention.head_count / embedding_length")
    kv_heads = get("attention.head_count_kv") or heads
    head_dim = get("attention.key_length") or embd // heads
    print(layers * 2 * kv_heads * head_dim * elem)


if __name__ == "__main__":
    main()
