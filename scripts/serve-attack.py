#!/usr/bin/env python3
"""Replays the attacks of issue 20 (items 1, 2 and 5) against a running `rtllm serve` and
measures a normal request during each: it must stay under --limit seconds (default 2).

Starts nothing itself: point --url at a server (e.g. `target/release/rtllm serve --port 8000`).
Python 3.11 standard library only.

  1a  clients that send /v1/completions with 100 000 and 800 000 one-token prompts, in a loop
  1b  a client that sends the most prompts a request may carry (long generations, streamed) and
      leaves after --hold seconds, in a loop (its requests must be dropped at once)
  2   thousands of idle connections, half of them with half a header, kept up as the server
      closes them; probed once that many were opened (a normal request and GET /health)
  5   the executor saturated with long streams (more than the batch holds); probe:
      GET /health_generate (a normal request queues behind that load by design)

Prints a table (probe latency p50 and max per attack) and exits 1 if a probe failed or took
longer than --limit.
"""

import argparse
import http.client
import json
import select
import socket
import statistics
import sys
import threading
import time
import urllib.parse


class Target:
    def __init__(self, url: str, api_key: str | None):
        u = urllib.parse.urlparse(url)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 80
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"

    def conn(self, timeout: float = 120) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 120) -> tuple[int, bytes]:
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=self.headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()


NORMAL = json.dumps(
    {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8,
        "temperature": 0,
    }
).encode()


def probe(t: Target, kind: str) -> tuple[bool, float]:
    """One probe request: (answered 200, seconds)."""
    start = time.monotonic()
    try:
        if kind == "chat":
            status, _ = t.request("POST", "/v1/chat/completions", NORMAL)
        elif kind == "health":
            status, _ = t.request("GET", "/health")
        else:
            status, _ = t.request("GET", "/health_generate")
    except OSError:
        status = 0
    return status == 200, time.monotonic() - start


class Attack:
    """Runs `body(stop)` on `workers` threads until stopped; counts what the attacker saw."""

    def __init__(self, name: str, body, workers: int = 1):
        self.name = name
        self.stop = threading.Event()
        self.seen: dict[str, int] = {}
        self.progress = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=body, args=(self,), daemon=True) for _ in range(workers)]

    def note(self, what: str):
        with self.lock:
            self.seen[what] = self.seen.get(what, 0) + 1

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(timeout=30)


def stream(t: Target, a: Attack, body: bytes, what: str, then):
    """POSTs a streaming completion, notes the status, runs `then(response)`, closes."""
    c = t.conn(600)
    try:
        c.request("POST", "/v1/completions", body=body, headers=t.headers)
        r = c.getresponse()
        a.note(f"{what} -> {r.status}")
        then(r)
    except OSError as e:
        a.note(f"error {type(e).__name__}")
    finally:
        c.close()


def drain(a: Attack, r: http.client.HTTPResponse):
    while not a.stop.is_set() and r.read1(4096):
        pass


def huge_prompt_lists(t: Target):
    bodies = [
        json.dumps({"prompt": [[1]] * 100_000, "max_tokens": 16}).encode(),
        json.dumps({"prompt": [[1]] * 800_000, "max_tokens": 16}).encode(),
    ]

    def body(a: Attack):
        i = 0
        while not a.stop.is_set():
            try:
                status, _ = t.request("POST", "/v1/completions", bodies[i % 2], timeout=60)
                a.note(f"{len(bodies[i % 2]) // 1000} KB -> {status}")
            except OSError as e:
                a.note(f"error {type(e).__name__}")
            i += 1

    return body


def hit_and_run(t: Target, prompts: int, hold: float):
    body_bytes = json.dumps(
        {"prompt": [[1, 2, 3, 4]] * prompts, "max_tokens": 4000, "ignore_eos": True, "stream": True}
    ).encode()

    def body(a: Attack):
        while not a.stop.is_set():
            # The client leaves (closes the connection) after `hold` seconds.
            stream(t, a, body_bytes, f"{prompts} prompts", lambda _: a.stop.wait(hold))

    return body


def idle_connections(t: Target, count: int):
    def body(a: Attack):
        ep = select.epoll()
        socks: dict[int, socket.socket] = {}
        opened = 0
        while not a.stop.is_set():
            while len(socks) < count and not a.stop.is_set():
                try:
                    s = socket.create_connection((t.host, t.port), timeout=5)
                except OSError as e:
                    a.note(f"connect {type(e).__name__}")
                    time.sleep(0.05)
                    break
                if opened % 2:
                    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
                s.setblocking(False)
                ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
                socks[s.fileno()] = s
                opened += 1
                a.progress = opened
            for fd, _ in ep.poll(0.1):
                s = socks.pop(fd, None)
                if s is not None:
                    ep.unregister(fd)
                    s.close()
                    a.note("closed by the server")
        a.note(f"opened {opened}")
        for s in socks.values():
            s.close()
        ep.close()

    return body


def long_streams(t: Target):
    body_bytes = json.dumps(
        {"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    ).encode()

    def body(a: Attack):
        while not a.stop.is_set():
            stream(t, a, body_bytes, "long stream", lambda r: drain(a, r))

    return body


def measure(t: Target, kind: str, seconds: float) -> list[tuple[bool, float]]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(probe(t, kind))
        time.sleep(0.1)
    return out


def settle(t: Target, seconds: float = 60):
    """Waits until the executor runs nothing (read from /metrics), so phases do not overlap."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            status, text = t.request("GET", "/metrics", timeout=10)
            if status == 200 and b"rtllm_num_requests_running 0\n" in text and b"rtllm_num_requests_waiting 0\n" in text:
                return
        except OSError:
            pass
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--seconds", type=float, default=10, help="probing time per attack")
    ap.add_argument("--limit", type=float, default=2.0, help="largest acceptable probe latency (s)")
    ap.add_argument("--prompts", type=int, default=64, help="prompts of attack 1b (the server's maximum)")
    ap.add_argument("--hold", type=float, default=0.5, help="seconds attack 1b's client stays")
    ap.add_argument("--idle-connections", type=int, default=3000)
    ap.add_argument("--busy-streams", type=int, default=16, help="long streams of attack 5 (> max_batch_size)")
    ap.add_argument("--attacks", default="1a,1b,2,5", help="which attacks to run (comma-separated)")
    args = ap.parse_args()
    t = Target(args.url, args.api_key)

    rows = []

    def record(attack: str, kind: str, results, seen=None):
        lat = [s for _, s in results]
        ok = all(good for good, _ in results)
        rows.append((attack, kind, len(results), statistics.median(lat), max(lat), ok and max(lat) <= args.limit, seen))

    print(f"probing {args.url} ({args.seconds:.0f} s per attack) ...", file=sys.stderr)
    settle(t)
    record("baseline (no attack)", "chat", measure(t, "chat", args.seconds))

    chosen = set(args.attacks.split(","))
    if "1a" in chosen:
        with Attack("1a", huge_prompt_lists(t), workers=4) as a:
            time.sleep(1)
            res = measure(t, "chat", args.seconds)
        record("1a 100k/800k-prompt requests x4 clients", "chat", res, a.seen)
        settle(t)
    if "1b" in chosen:
        with Attack("1b", hit_and_run(t, args.prompts, args.hold)) as a:
            time.sleep(1)
            res = measure(t, "chat", args.seconds)
        record(f"1b {args.prompts}-prompt stream, client leaves", "chat", res, a.seen)
        settle(t)
    if "2" in chosen:
        with Attack("2", idle_connections(t, args.idle_connections)) as a:
            # Probe once the attacker has opened as many connections as it keeps (or a minute).
            end = time.monotonic() + 60
            while a.progress < args.idle_connections and time.monotonic() < end:
                time.sleep(0.2)
            res_chat = measure(t, "chat", args.seconds / 2)
            res_health = measure(t, "health", args.seconds / 2)
        record(f"2  {args.idle_connections} idle/half-header conns", "chat", res_chat, a.seen)
        record(f"2  {args.idle_connections} idle/half-header conns", "health", res_health)
        settle(t)
    if "5" in chosen:
        with Attack("5", long_streams(t), workers=args.busy_streams) as a:
            time.sleep(3)
            res = measure(t, "health_generate", args.seconds)
        record(f"5  busy: {args.busy_streams} long streams", "health_generate", res, a.seen)
        settle(t)

    print(f"\n{'attack':<44} {'probe':<16} {'n':>4} {'p50 s':>7} {'max s':>7}  result")
    for attack, kind, n, p50, mx, good, _ in rows:
        print(f"{attack:<44} {kind:<16} {n:>4} {p50:>7.3f} {mx:>7.3f}  {'ok' if good else 'FAIL'}")
    print("\nwhat the attackers saw:")
    for attack, _, _, _, _, _, seen in rows:
        if seen:
            print(f"  {attack}: " + ", ".join(f"{k} x{v}" for k, v in sorted(seen.items())))
    return 0 if all(r[5] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
