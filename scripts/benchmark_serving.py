"""Load benchmark of the prediction service: N concurrent clients uploading real photos.

Starts `python -m serving` on a free 127.0.0.1 port (settings via --set KEY=VALUE),
waits for readiness, then for each concurrency level runs that many keep-alive clients
for --duration seconds, each POSTing the full-size JPEGs of the photo folder to /predict
as multipart uploads. Reports requests/s, p50/p95/p99 latency, errors and the server's
peak resident memory (VmHWM). The client is raw asyncio sockets with pre-built requests
so that it takes as little of the shared CPU as possible.

    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export \
        --concurrency 1 4 16 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "benchmarkboundary7d3f"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_requests(photos: list[Path], host: str, port: int) -> list[bytes]:
    """One complete HTTP/1.1 multipart request per photo, built once."""
    requests = []
    for path in photos:
        data = path.read_bytes()
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{path.name}"\r\nContent-Type: image/jpeg\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        head = (
            f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
    return requests


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


async def client(
    host: str, port: int, requests: list[bytes], offset: int, stop_at: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    while time.perf_counter() < stop_at:
        payload = requests[i % len(requests)]
        i += 1
        started = time.perf_counter()
        try:
            writer.write(payload)
            status = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
            continue
        latencies.append(time.perf_counter() - started)
        if status != 200:
            errors += 1
    writer.close()
    return latencies, errors


async def run_level(
    host: str, port: int, requests: list[bytes], concurrency: int, duration: float
) -> dict[str, float]:
    started = time.perf_counter()
    stop_at = started + duration
    spread = max(1, len(requests) // concurrency)
    results = await asyncio.gather(
        *(client(host, port, requests, k * spread, stop_at) for k in range(concurrency))
    )
    elapsed = time.perf_counter() - started
    latencies = np.array([lat for lats, _ in results for lat in lats]) * 1000.0
    errors = sum(err for _, err in results)
    return {
        "clients": concurrency,
        "requests": int(latencies.size),
        "rps": latencies.size / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        "p95_ms": float(np.percentile(latencies, 95)) if latencies.size else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) if latencies.size else float("nan"),
        "errors": errors,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_server(port: int, model_dir: str, settings: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "MODEL_DIR": model_dir}
    env.setdefault("LOG_LEVEL", "warning")
    env.setdefault("STORE_PATH", "/tmp/cats-dogs-benchmark/store.sqlite3")
    for item in settings:
        key, _, value = item.partition("=")
        env[key] = value
    return subprocess.Popen(
        [sys.executable, "-m", "serving"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )


def wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("The server did not become ready.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="models/export")
    parser.add_argument("--photos", default=str(ROOT.parent / "shared/data/fullres"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load")
    parser.add_argument("--set", action="append", default=[], help="server env KEY=VALUE")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()

    photos = sorted(Path(args.photos).glob("*.jpg"))
    if not photos:
        sys.exit(f"No JPEGs in {args.photos}")
    port = free_port()
    server = start_server(port, args.model_dir, args.set)
    rows = []
    try:
        wait_ready(port)
        requests = build_requests(photos, "127.0.0.1", port)
        asyncio.run(run_level("127.0.0.1", port, requests, max(args.concurrency), args.warmup))
        for concurrency in args.concurrency:
            cpu_before = cpu_seconds(server.pid)
            row = asyncio.run(run_level("127.0.0.1", port, requests, concurrency, args.duration))
            cpu_used = cpu_seconds(server.pid) - cpu_before
            row["server_cpu_ms_per_request"] = 1000.0 * cpu_used / max(1, row["requests"])
            row["peak_rss_mb"] = peak_rss_mb(server.pid)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(
        f"\nsettings: {' '.join(args.set) or '(defaults)'}; {len(photos)} photos; "
        f"{args.duration:g} s per level"
    )
    print(
        "| clients | req/s | p50 ms | p95 ms | p99 ms | errors | peak RSS MB | server CPU ms/req |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['errors']} | {r['peak_rss_mb']:.0f} "
            f"| {r['server_cpu_ms_per_request']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": args.set, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
