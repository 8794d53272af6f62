"""`GET /metrics`: the server's counters in Prometheus' text exposition format (version 0.0.4).

    chatforge_requests_total{route,status}       requests answered (streams counted when they end)
    chatforge_request_duration_seconds{route}    histogram of the time to the last byte
    chatforge_requests_in_flight                 requests being handled now
    chatforge_prompt_tokens_total                prompt tokens of generation requests
    chatforge_generation_tokens_total            tokens generated (stop tokens included, as `usage` counts)
    chatforge_queue_size                         jobs waiting for the model worker
    chatforge_worker_rounds_total, chatforge_batched_calls_total   the worker's rounds, and its sampler
                                                 calls that served more than one request

Routes are labelled by their template (`/v1/completions`), unknown paths as `other`, so a scanner
cannot grow the label set. Written by hand: the format is a few lines and no dependency is needed.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Thread-safe counters; `render()` writes them out."""

    def __init__(self, routes: list[str]):
        self.routes = set(routes)
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.bucket_counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.duration_sum: dict[str, float] = defaultdict(float)
        self.duration_count: dict[str, int] = defaultdict(int)
        self.in_flight = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def route(self, path: str) -> str:
        if path.startswith("/v1/models/"):
            return "/v1/models/{model}"
        return path if path in self.routes else "other"

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(route, status)] += 1
            counts = self.bucket_counts[route]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            self.duration_sum[route] += seconds
            self.duration_count[route] += 1

    def tokens(self, prompt: int, generated: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.generation_tokens += generated

    def render(self, queue_size: int, rounds: int, batched_calls: int) -> str:
        lines: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")

        def scalar(name: str, kind: str, text: str, value: int) -> None:
            head(name, kind, text)
            lines.append(f"{name} {value}")

        with self._lock:
            head("chatforge_requests_total", "counter", "HTTP requests answered, by route and status.")
            for (route, status), count in sorted(self.requests.items()):
                lines.append(f'chatforge_requests_total{{route="{route}",status="{status}"}} {count}')
            head("chatforge_request_duration_seconds", "histogram", "Time from the request to the response's last byte.")
            for route in sorted(self.duration_count):
                for bound, count in zip(BUCKETS, self.bucket_counts[route]):
                    lines.append(f'chatforge_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {count}')
                lines.append(f'chatforge_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {self.duration_count[route]}')
                lines.append(f'chatforge_request_duration_seconds_sum{{route="{route}"}} {self.duration_sum[route]!r}')
                lines.append(f'chatforge_request_duration_seconds_count{{route="{route}"}} {self.duration_count[route]}')
            scalar("chatforge_requests_in_flight", "gauge", "Requests being handled now.", self.in_flight)
            scalar("chatforge_prompt_tokens_total", "counter", "Prompt tokens of generation requests.", self.prompt_tokens)
            scalar("chatforge_generation_tokens_total", "counter", "Tokens generated, stop tokens included.", self.generation_tokens)
        scalar("chatforge_queue_size", "gauge", "Jobs waiting for the model worker.", queue_size)
        scalar("chatforge_worker_rounds_total", "counter", "Rounds the model worker has served.", rounds)
        scalar("chatforge_batched_calls_total", "counter", "Sampler calls that served more than one request.", batched_calls)
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP request, its status and its time to the last byte."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # if the app raises before answering
        self.metrics.started()

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.finished(self.metrics.route(scope.get("path", "")), status, time.perf_counter() - start)
