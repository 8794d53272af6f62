"""A bounded load test of a running `chatforge serve` on this machine (loopback addresses only).

    python -m chatforge.serve.loadtest --url http://127.0.0.1:8000 --requests 50 --concurrency 50
    python -m chatforge.serve.loadtest --requests 90 --concurrency 12 --invalid-every 3

Sends `--requests` chat completions (greedy, `--max-tokens` each) from `--concurrency` threads,
then prints requests/s, latency percentiles and the failures. Exits 1 when any request failed.
With `--invalid-every k`, every k-th request is one of `INVALID_BODIES` (malformed or hostile): it
must be answered 4xx, and a 5xx anywhere is a failure.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

MAX_REQUESTS = 10_000


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def one_request(url: str, model: str, i: int, max_tokens: int, api_key: str | None, stream: bool) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": f"Question number {i}?"}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        data = response.read()
    if stream:
        if not data.rstrip().endswith(b"data: [DONE]") or b'"error"' in data:
            raise RuntimeError(f"stream did not end cleanly: {data[-200:]!r}")
    elif not json.loads(data)["choices"]:
        raise RuntimeError("no choices")
    return time.perf_counter() - start


def _invalid_bodies(model: str) -> list[tuple[str, bytes]]:
    """(endpoint, body) pairs a server must answer with 4xx: each once crashed a server or is an easy mistake."""
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    text = {"model": model, "prompt": "hi", "max_tokens": 4}

    def body(base: dict, **changes) -> bytes:
        return json.dumps({**base, **changes}).encode()

    return [
        ("chat/completions", b'{"model": '),  # truncated JSON
        ("chat/completions", b"[" * 5000 + b"]" * 5000),  # nesting (RecursionError in json.loads)
        ("completions", b'{"model": "' + model.encode() + b'", "prompt": "\\ud800", "max_tokens": 4}'),  # lone surrogate
        ("chat/completions", body(chat, seed=2**70)),  # beyond 64 bits
        ("completions", body(text, n=True)),  # a boolean for an integer
        ("completions", body(text, max_tokens=10**12)),
        ("completions", body(text, prompt=[10**30])),  # a token id beyond any vocabulary
        ("completions", b'{"model": "x", "prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}"),  # 5000-digit integer
        ("chat/completions", body(chat, temperature=-1)),
        ("chat/completions", body(chat, model="no-such-model")),
        ("chat/completions", body(chat, unknown_field=1)),
        ("chat/completions", body(chat, messages=[])),
        ("completions", b"\xef\xbb\xbf\xff\xfe not utf-8"),
    ]


def invalid_request(url: str, model: str, i: int, api_key: str | None) -> int:
    """Send the `i`-th invalid body; return its status (a 4xx is the right answer)."""
    bodies = _invalid_bodies(model)
    endpoint, body = bodies[i % len(bodies)]
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(f"{url}/v1/{endpoint}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server root (loopback only)")
    parser.add_argument("--model", default=None, help="model id; default: the first of /v1/models")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stream-every", type=int, default=10, help="every k-th request streams; 0 = none")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--invalid-every", type=int, default=0, help="every k-th request is invalid and must get 4xx; 0 = none")
    args = parser.parse_args(argv)
    if not is_loopback(args.url):
        parser.error(f"{args.url} is not a loopback address: this tool only loads a server on this machine")
    if not 1 <= args.requests <= MAX_REQUESTS or args.concurrency < 1:
        parser.error(f"--requests must be 1..{MAX_REQUESTS} and --concurrency >= 1")
    url = args.url.rstrip("/")
    model = args.model
    if model is None:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
            model = json.loads(response.read())["data"][0]["id"]

    statuses: list[int] = []

    def task(i: int) -> float | str | None:
        try:
            if args.invalid_every > 0 and i % args.invalid_every == args.invalid_every - 1:
                status = invalid_request(url, model, i // args.invalid_every, args.api_key)
                statuses.append(status)
                return None if 400 <= status < 500 else f"request {i} (invalid): answered {status}, not 4xx"
            stream = args.stream_every > 0 and i % args.stream_every == args.stream_every - 1
            return one_request(url, model, i, args.max_tokens, args.api_key, stream)
        except urllib.error.HTTPError as exc:
            return f"request {i}: answered {exc.code}: {exc.read()[:200]!r}"
        except (urllib.error.URLError, OSError, RuntimeError, ValueError, KeyError) as exc:
            return f"request {i}: {exc}"

    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(task, range(args.requests)))
    seconds = time.perf_counter() - start
    latencies = sorted(r for r in results if isinstance(r, float))
    failures = [r for r in results if isinstance(r, str)]
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")  # noqa: E731
    print(f"{args.requests} requests ({args.concurrency} concurrent, max_tokens {args.max_tokens}) in {seconds:.2f} s: "
          f"{args.requests / seconds:.1f} requests/s; latency p50 {pct(0.5):.2f} s, p95 {pct(0.95):.2f} s, "
          f"max {pct(1.0):.2f} s; {len(failures)} failed"
          + (f"; {len(statuses)} invalid requests answered {sorted(set(statuses))}" if statuses else ""))
    for failure in failures[:10]:
        print("  " + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
