"""The model worker: one thread owns the model; HTTP handlers hand it `Job`s through a queue.

Scheduling policy (one round at a time):
1. The worker blocks for the first waiting job, then takes every other job already waiting, up to
   `max_batch` jobs in all (no timer: an idle server answers a lone request at once, a busy one
   batches whatever piled up during the previous round).
2. Non-streaming jobs whose `SamplingConfig` is identical (temperature, top-p, top-k, max_tokens,
   n, stop) and that carry no seed are decoded together in ONE `Sampler.generate` call (left-padded
   batch, `max_batch_rows` rows at a time). A seeded job is decoded alone, so its output does not
   depend on what else was in the queue.
3. Streaming jobs are decoded one after another with the incremental decoder (`stream.py`), each
   prompt's n samples together. While a stream decodes, other requests wait in the queue.
   A job with `echo` also gets its prompts' log-probs (one scoring forward, `prompt_logprobs`) after
   its samples; a job with `generate=False` (`max_tokens: 0`) gets only those.
4. Groups run in the order of their first job's arrival. If a batched call raises, each of its
   jobs is retried alone, so only the request that fails gets the error (answered 500); the worker
   catches every exception and keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from chatforge.sampling import Completion, Sampler, SamplingConfig
from chatforge.sampling.prompt_logprobs import PromptLogprobs, prompt_logprobs
from chatforge.serve.protocol import APIError
from chatforge.serve.stream import IncrementalDecoder

logger = logging.getLogger("chatforge.serve")


@dataclass
class JobResult:
    """A non-streamed job's answer: per prompt its n samples, and its prompt log-probs when echoed."""

    completions: list[list[Completion]]
    prompt_logprobs: list[PromptLogprobs] | None = None


@dataclass
class Job:
    """One request's prompts and settings, and the way back to its handler's event loop."""

    prompts: list[list[int]]
    cfg: SamplingConfig
    stream: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future | None = None  # non-stream: list (per prompt) of list (n) of Completion
    events: asyncio.Queue | None = None  # stream: ("delta", choice, text, finish, tokens) ... ("done", results) | ("error", exc)
    cancelled: threading.Event = field(default_factory=threading.Event)
    echo_top: int | None = None  # score the prompts too, with this many alternatives per token; None = no
    generate: bool = True  # False: `max_tokens: 0`, only the prompts' log-probs (with echo)

    @classmethod
    def create(cls, prompts: list[list[int]], cfg: SamplingConfig, stream: bool, echo_top: int | None = None,
               generate: bool = True) -> Job:
        loop = asyncio.get_running_loop()
        job = cls(prompts, cfg, stream, loop, echo_top=echo_top, generate=generate)
        if stream:
            job.events = asyncio.Queue()
        else:
            job.future = loop.create_future()
        return job

    def batch_key(self) -> str | None:
        """Jobs with the same key may share a sampler call; None = decode alone."""
        if self.stream or self.cfg.seed is not None:
            return None
        return f"{self.cfg.model_dump_json()}|{self.echo_top}|{self.generate}"

    # -- called from the worker thread ------------------------------------------------------------

    def send_event(self, *event: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        if self.stream:
            self.send_event("error", error) if error is not None else self.send_event("done", result)
            return

        def _set() -> None:
            if self.future.done():  # the handler was cancelled (client went away)
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(_set)


class ModelWorker:
    """Owns the model in a worker thread; `submit` is called from the event loop."""

    def __init__(self, model, tokenizer, *, max_batch: int = 16, max_queue: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.sampler = Sampler(self.model, tokenizer)
        self.decoder = IncrementalDecoder(self.model, tokenizer, self.sampler)  # one decoding loop, one sampler
        self.max_batch = max_batch
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.rounds = 0  # rounds served; `batched_calls` counts sampler calls that served >1 job
        self.batched_calls = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="chatforge-model", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def queue_size(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise APIError(429, "the server's queue is full; retry later", code="queue_full") from None

    # -- worker thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            stopping = False
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            try:
                self._round([j for j in jobs if not j.cancelled.is_set()])
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything
                logger.exception("model worker round failed")
                for job in jobs:
                    job.resolve(error=exc)
            if stopping:
                return

    def _round(self, jobs: list[Job]) -> None:
        self.rounds += 1
        groups: dict[str, list[Job]] = {}
        order: list[list[Job]] = []
        for job in jobs:
            key = job.batch_key()
            if key is None:
                order.append([job])
            elif key in groups:
                groups[key].append(job)
            else:
                groups[key] = [job]
                order.append(groups[key])
        for group in order:
            if group[0].stream:
                self._stream(group[0])
            else:
                self._batch(group)

    def _batch(self, jobs: list[Job]) -> None:
        prompts = [p for job in jobs for p in job.prompts]
        try:
            # Stop decoding once every request of the call has gone (its handler saw the disconnect).
            first = jobs[0]
            if first.generate:
                results = self.sampler.generate(prompts, first.cfg, should_stop=lambda: all(j.cancelled.is_set() for j in jobs))
            else:  # max_tokens 0: nothing to decode
                results = [[Completion(i, [], "", [], "length", None) for _ in range(first.cfg.n)] for i in range(len(prompts))]
            scores = None
            if first.echo_top is not None:
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                scores = prompt_logprobs(self.model, prompts, first.echo_top, pad_id=pad)
        except Exception as exc:
            if len(jobs) == 1:
                logger.exception("generation failed")
                jobs[0].resolve(error=exc)
                return
            for job in jobs:  # find the culprit: each job alone
                self._batch([job])
            return
        if len(jobs) > 1:
            self.batched_calls += 1
        start = 0
        for job in jobs:
            end = start + len(job.prompts)
            job.resolve(JobResult(results[start:end], scores[start:end] if scores is not None else None))
            start = end

    def _stream(self, job: Job) -> None:
        n = job.cfg.n
        results: list[list[Completion]] = []
        try:
            for p, prompt in enumerate(job.prompts):
                if job.cancelled.is_set():
                    break

                def on_delta(i: int, text: str, finish: str | None, tokens: list, offset: int = p * n) -> None:
                    job.send_event("delta", offset + i, text, finish, tokens)

                results.append(self.decoder.generate(prompt, job.cfg, on_delta, job.cancelled.is_set, with_tokens=True))
        except Exception as exc:
            logger.exception("streamed generation failed")
            job.resolve(error=exc)
            return
        job.resolve(results)
