"""Connection-level limits uvicorn does not enforce: a deadline for each request to arrive, and a
cap on open connections, both answered before the app sees the request.

uvicorn closes idle keep-alive connections, but a client that sends its headers or body a byte at
a time keeps a connection (and, once the headers are in, a handler waiting on the body) forever;
and `limit_concurrency` answers 503 without `Retry-After`. `guarded_protocol` is uvicorn's h11
protocol with:
- a read deadline: from the connection's start (or the end of its previous response) the request's
  headers and body must be complete within `read_timeout_s`, else 408 and the connection closes;
- a connection cap: a connection beyond `max_connections` gets 503 with `Retry-After` and is closed
  (it never reaches the app; one that sends nothing is closed at the read deadline).
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from chatforge.serve.protocol import APIError


def raw_error(status: int, reason: str, error: APIError, retry_after_s: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, written outside the h11 state machine."""
    body = json.dumps(error.body()).encode()
    headers = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
               "connection: close"]
    if retry_after_s is not None:
        headers.append(f"retry-after: {retry_after_s}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def guarded_protocol(max_connections: int, read_timeout_s: float, retry_after_s: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a per-request read deadline and a connection cap (see the module doc)."""

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._refused = len(self.connections) > max_connections
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                # Answered once the client has sent something, and after reading it: closing a socket
                # with unread data makes the kernel send a reset, which can destroy the answer.
                if not self.transport.is_closing():
                    error = APIError(503, f"the server has {max_connections} connections open, its limit; retry later",
                                     code="too_many_connections")
                    self.transport.write(raw_error(503, "Service Unavailable", error, retry_after_s))
                    self.transport.close()
                return
            super().data_received(data)
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm()  # the request is in; what the app does with it has its own limits

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is not h11.DONE:
                self._arm()  # the next request on this keep-alive connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _read_timed_out(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
                error = APIError(408, f"the request did not arrive within {read_timeout_s:g} s", code="request_timeout")
                self.transport.write(raw_error(408, "Request Timeout", error))
            self.transport.close()  # the handler waiting on the body sees a disconnect

    return GuardedH11Protocol
