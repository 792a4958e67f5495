"""uvicorn's h11 protocol with a deadline on the request head.

uvicorn's httptools parser has no header size limit and neither parser a header-read
timeout: a client could send endless or unfinished headers, or trickle them for ever,
without a key. h11 caps one request head at `MAX_HEADER_BYTES`
(`h11_max_incomplete_event_size`: 400 and close past it); this subclass also closes a
connection whose request head has not fully arrived `HEADER_READ_TIMEOUT_S` after the
connection opened or its previous answer was sent. `python -m serving` runs it.
"""

from __future__ import annotations

import asyncio
from functools import cache

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.settings import Settings


@cache
def header_read_timeout_s() -> float:
    """Read once per process from the environment (the protocol has no other channel)."""
    return Settings.from_env().header_read_timeout_s


class BoundedH11Protocol(H11Protocol):
    """H11Protocol that drops connections still sending their request head after a deadline."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(header_read_timeout_s(), self._head_deadline)

    def _head_deadline(self) -> None:
        """Close when no request head has been parsed since the timer was armed (h11
        still waits for the client's request line or headers)."""
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
