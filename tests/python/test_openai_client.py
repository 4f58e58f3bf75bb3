"""The official `openai` Python client against `rtllm serve` on the default model: completion,
chat, and streaming (with the usage chunk). The server is started once per session on a free
port (`--port 0`); its "listening on http://HOST:PORT" line gives the address."""

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-python-test"
MODEL = "rtllm-default"


def _binary() -> Path:
    exe = os.environ.get("RTLLM_BIN")
    if exe:
        return Path(exe)
    return ROOT / "target" / "debug" / "rtllm"


def _default_model() -> Path:
    cache = Path(os.environ.get("RTLLM_CACHE_DIR", Path.home() / ".cache" / "rtllm"))
    return cache / "models"


@pytest.fixture(scope="session")
def server():
    exe = _binary()
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: run `cargo build --workspace` first")
    if not _default_model().exists():
        pytest.skip(f"{_default_model()} is missing; run scripts/fetch-default-model.sh")
    proc = subprocess.Popen(
        [str(exe), "serve", "--port", "0", "--api-key", KEY, "--served-model-name", MODEL],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
    )
    found = {}

    def read_address():
        for line in proc.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                found["url"] = m.group(1)
                break

    reader = threading.Thread(target=read_address, daemon=True)
    reader.start()
    reader.join(timeout=300)
    if "url" not in found:
        proc.kill()
        pytest.fail(f"rtllm serve did not print its address (exit code {proc.poll()})")
    yield found["url"]
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion(client):
    out = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, extra_body={"ignore_eos": True}
    )
    assert out.object == "text_completion"
    assert out.choices[0].text.startswith(" Paris"), out.choices[0].text
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + 8


def test_chat(client):
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert out.choices[0].message.role == "assistant"
    assert "Paris" in out.choices[0].message.content
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens > 0


def test_streaming_completion_and_chat(client):
    whole = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=10, temperature=0)
    stream = client.completions.create(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=24, temperature=0, stream=True
    )
    parts, finish = [], None
    for c in stream:
        for ch in c.choices:
            parts.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert "".join(parts) == whole.choices[0].message.content
    assert finish == "stop"


def test_errors_are_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="hi", temperature=-1)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="no-such-model", prompt="hi")
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unsupported_fields_are_refused_by_name(client):
    messages = [{"role": "user", "content": "Hi"}]
    for field, value in [("response_format", {"type": "json_object"}), ("logit_bias", {"1": 5})]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, **{field: value})
        assert e.value.body["param"] == field
    # What the server does anyway is accepted.
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, response_format={"type": "text"})
    assert out.choices[0].message.role == "assistant"
