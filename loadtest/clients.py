"""Keep-alive HTTP/1.1 clients on asyncio that send pre-built requests and tally answers.

Raw sockets rather than an HTTP library, so the clients cost little CPU on the machine
they share with the server being measured.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from loadtest.payloads import Action


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # good photos answered 200
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)  # kind -> status -> n
    transport_errors: int = 0

    def add(self, kind: str, status: int) -> None:
        by_status = self.statuses.setdefault(kind, {})
        by_status[status] = by_status.get(status, 0) + 1


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def separately(port: int, action: Action) -> int:
    """On its own connection: hang up midway (status 0), or read an answer given before
    the body was sent (a body cap), then close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status = 0
    try:
        if action.disconnect:
            writer.write(action.payload[: max(1, len(action.payload) * 3 // 4)])
            await writer.drain()
            await asyncio.sleep(0.01)
        else:
            writer.write(action.payload)
            status = await asyncio.wait_for(read_response(reader), 10)
    except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
        status = -1
    writer.close()
    return status


async def client(
    port: int, actions: list[Action], offset: int, stop_at: float, tally: Tally
) -> None:
    """Send `actions` in turn (from `offset`) on one keep-alive connection until `stop_at`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    while time.perf_counter() < stop_at:
        action = actions[i % len(actions)]
        i += 1
        if action.disconnect or action.answer_before_body:
            tally.add(action.kind, await separately(port, action))
            continue
        started = time.perf_counter()
        try:
            writer.write(action.payload)
            status = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            tally.transport_errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        tally.add(action.kind, status)
        if action.kind == "good" and status == 200:
            tally.latencies.append(time.perf_counter() - started)
    writer.close()


async def run_clients(
    port: int, groups: list[tuple[list[Action], int]], duration: float
) -> tuple[Tally, float]:
    """Run each group's `count` clients over its actions for `duration` seconds."""
    tally = Tally()
    started = time.perf_counter()
    stop_at = started + duration
    tasks = []
    for actions, count in groups:
        spread = max(1, len(actions) // max(1, count))
        tasks += [client(port, actions, k * spread, stop_at, tally) for k in range(count)]
    await asyncio.gather(*tasks)
    return tally, time.perf_counter() - started


def summary(tally: Tally, elapsed: float) -> dict[str, float]:
    lat = np.array(tally.latencies) * 1000.0
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: float("nan"))
    server_errors = sum(n for by in tally.statuses.values() for s, n in by.items() if s >= 500)
    good_other = sum(n for s, n in tally.statuses.get("good", {}).items() if s != 200)
    return {
        "good_rps": lat.size / elapsed,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "good_not_200": good_other,
        "server_errors": server_errors,
        "transport_errors": tally.transport_errors,
    }
