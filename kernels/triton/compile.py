#!/usr/bin/env python3
"""Ahead-of-time compiler of rtllm's Triton kernels (run on a GPU machine with Triton 3.x).

Reads kernels/triton/kernels.toml, compiles every listed @triton.jit function for sm_90 with
triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32)) once per type-variable
binding ("variant") and specialization ("aligned": divisibility-16 hints on the args marked
align = 16; "generic": no hints), and writes artifacts/<entry>.<types>.<spec>.cubin plus
artifacts/manifest.json, which plugins/triton embeds at build time and registers ops from.

    python3 kernels/triton/compile.py [--toml FILE] [--out DIR] [--ptx] [--check-only]

--check-only validates kernels.toml against the Python sources without compiling. An entry with
`extends = "<name>"` starts from that entry: its `constexprs` are merged over the base's, its
`checks` are appended to the base's, and every other key it gives replaces the base's.
"""

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMAT = 1
# rtllm dtype names -> Triton signature type names.
TRITON_TYPES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i32": "i32", "i64": "i64", "u8": "u8"}
SCALAR_TYPES = {"i32", "i64", "fp32", "u32"}


def load_toml(path):
    try:
        import tomllib as toml
    except ImportError:
        try:
            import tomli as toml
        except ImportError:
            from pip._vendor import tomli as toml  # pip vendors tomli on Python < 3.11
    with open(path, "rb") as f:
        return toml.load(f)


def resolve_extends(entries):
    """The entries with `extends` expanded (see the module doc); a base must not extend another."""
    by_name = {e.get("name"): e for e in entries}
    out = []
    for e in entries:
        if "extends" not in e:
            out.append(e)
            continue
        base = by_name.get(e["extends"])
        if base is None or "extends" in base:
            fail(e, f"extends {e['extends']!r}, which is not a plain entry of kernels.toml")
        merged = dict(base)
        merged.update({k: v for k, v in e.items() if k not in ("extends", "constexprs", "checks")})
        merged["constexprs"] = {**base.get("constexprs", {}), **e.get("constexprs", {})}
        merged["checks"] = list(base.get("checks", [])) + list(e.get("checks", []))
        out.append(merged)
    return out


def fail(entry, msg):
    raise SystemExit(f"kernels.toml: kernel '{entry.get('name', '?')}': {msg}")


def resolve_type(entry, ty, binding):
    """'*T' -> '*bf16', 'fp32' -> 'fp32', '*i32' -> '*i32'."""
    ptr = ty.startswith("*")
    base = ty[1:] if ptr else ty
    if base in binding:
        base = TRITON_TYPES[binding[base]]
    elif ptr and base in TRITON_TYPES:
        base = TRITON_TYPES[base]
    elif not ptr and base not in SCALAR_TYPES:
        fail(entry, f"unknown argument type {ty!r} (use *<dtype or type var>, i32, i64, u32 or fp32)")
    return ("*" if ptr else "") + base


def validate(entry):
    for key in ("name", "op", "source", "function", "inputs", "variants", "outputs", "args", "grid"):
        if key not in entry:
            fail(entry, f"missing key '{key}'")
    if not re.fullmatch(r"[a-z0-9_]+", entry["name"]):
        fail(entry, "name must be lower-case letters, digits and _")
    if not 1 <= len(entry["grid"]) <= 3:
        fail(entry, "grid takes 1 to 3 expressions")
    type_vars = {i["dtype"] for i in entry["inputs"] if i["dtype"] not in TRITON_TYPES}
    for v in entry["variants"]:
        if set(v) != type_vars:
            fail(entry, f"variant {v} must bind exactly the type variables {sorted(type_vars)}")
        for d in v.values():
            if d not in TRITON_TYPES:
                fail(entry, f"variant {v}: unknown dtype {d!r}")


def load_function(entry):
    path = HERE / entry["source"]
    spec = importlib.util.spec_from_file_location(f"rtllm_triton_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(mod)
    fn = getattr(mod, entry["function"], None)
    if fn is None:
        fail(entry, f"{entry['source']} has no function {entry['function']}")
    return fn, hashlib.sha256(path.read_bytes()).hexdigest()


def signature(entry, fn, binding):
    """The ASTSource signature (every parameter; constexprs typed 'constexpr') and the
    divisibility attrs of the aligned specialization."""
    names = list(fn.arg_names)
    consts = entry.get("constexprs", {})
    arg_names = [a["name"] for a in entry["args"]]
    runtime = [n for n in names if n not in consts]
    if runtime != arg_names:
        fail(entry, f"args {arg_names} must list the kernel's non-constexpr parameters in order: {runtime}")
    types = {a["name"]: resolve_type(entry, a["type"], binding) for a in entry["args"]}
    sig = {n: ("constexpr" if n in consts else types[n]) for n in names}
    hints = {(names.index(a["name"]),): [["tt.divisibility", 16]] for a in entry["args"] if a.get("align") == 16}
    return sig, hints


def ptx_param_count(ptx, symbol):
    m = re.search(r"\.entry\s+" + re.escape(symbol) + r"\s*\(([^)]*)\)", ptx)
    return len(re.findall(r"\.param\s", m.group(1))) if m else None


def compile_one(entry, fn, binding, spec, triton, ASTSource, GPUTarget):
    sig, hints = signature(entry, fn, binding)
    consts = entry.get("constexprs", {})
    attrs = hints if spec == "aligned" else {}
    src = ASTSource(fn, sig, constexprs=dict(consts), attrs=attrs)
    opts = {"num_warps": entry.get("num_warps", 4), "num_stages": entry.get("num_stages", 1)}
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)
    md = ck.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        fail(entry, f"{binding} {spec}: needs global/profile scratch memory, which the plugin does not provide")
    if getattr(md, "num_ctas", 1) != 1 or tuple(getattr(md, "cluster_dims", (1, 1, 1))) not in ((1, 1, 1), ()):
        fail(entry, "clusters (num_ctas > 1) are not supported")
    symbol = md.name
    params = ptx_param_count(ck.asm["ptx"], symbol)
    if params is None:
        fail(entry, f"entry {symbol} not found in the PTX")
    trailing = params - len(entry["args"])
    if trailing < 0:
        fail(entry, f"the compiled kernel takes {params} parameters, fewer than the {len(entry['args'])} args")
    return ck, {
        "symbol": symbol,
        "shared": int(md.shared),
        "num_warps": int(md.num_warps),
        "trailing_null_args": trailing,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toml", type=Path, default=HERE / "kernels.toml", help="the kernel list (default: kernels.toml)")
    ap.add_argument("--out", type=Path, default=HERE / "artifacts")
    ap.add_argument("--ptx", action="store_true", help="also write the PTX next to each cubin")
    ap.add_argument("--check-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("TRITON_DISABLE_LINE_INFO", "1")

    spec_file = load_toml(args.toml)
    entries = resolve_extends(spec_file.get("kernel", []))
    names = [e.get("name") for e in entries]
    if len(set(names)) != len(names):
        raise SystemExit(f"kernels.toml: kernel names must be unique: {names}")
    for e in entries:
        validate(e)
    if args.check_only:
        print(f"kernels.toml: {len(entries)} kernels look well-formed")
        return

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.cubin"):
        old.unlink()
    for old in args.out.glob("*.ptx"):
        old.unlink()
    kernels = []
    total = 0
    written = {}  # cubin sha256 -> file name: entries that compile to the same binary share it
    for e in entries:
        fn, source_hash = load_function(e)
        specs = ["aligned", "generic"] if any(a.get("align") == 16 for a in e["args"]) else ["generic"]
        variants = []
        for binding in e["variants"]:
            for spec in specs:
                ck, info = compile_one(e, fn, binding, spec, triton, ASTSource, GPUTarget)
                stem = f"{e['name']}.{'_'.join(binding[k] for k in sorted(binding)) or 'any'}.{spec}"
                cubin = ck.asm["cubin"]
                digest = hashlib.sha256(cubin).hexdigest()
                if digest not in written:
                    written[digest] = f"{stem}.cubin"
                    (args.out / f"{stem}.cubin").write_bytes(cubin)
                    if args.ptx:
                        (args.out / f"{stem}.ptx").write_text(ck.asm["ptx"])
                    total += len(cubin)
                variants.append(dict(types=binding, specialization=spec, cubin=written[digest],
                                     cubin_sha256=digest, **info))
                print(f"{stem:48} {info['symbol']:40} {len(cubin):7} B  shared {info['shared']}", flush=True)
        spec_keys = ("name", "op", "summary", "source", "function", "inputs", "outputs", "checks", "lets", "args",
                     "grid", "constexprs", "num_warps", "num_stages", "examples")
        k = {key: e[key] for key in spec_keys if key in e}
        k.update(priority=e.get("priority", spec_file.get("priority", -10)), source_hash=source_hash,
                 variants=variants)
        kernels.append(k)
    manifest = {"format": FORMAT, "triton_version": triton.__version__, "target": "sm_90", "kernels": kernels}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(kernels)} kernels, {sum(len(k['variants']) for k in kernels)} variants, {len(written)} cubins, "
          f"{total} bytes -> {args.out}")


if __name__ == "__main__":
    main()
