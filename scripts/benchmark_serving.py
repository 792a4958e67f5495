"""Load benchmark of the prediction service, against the original course design.

`speed` (default): starts `python -m serving` (settings via --set KEY=VALUE) and the
course's original server (../shared/anchors/naive_server.py: torch eager on the event
loop) side by side on free 127.0.0.1 ports, then runs the same clients against each in
turn: N keep-alive connections POSTing the full-size JPEGs of --photos to /predict as
multipart uploads for --duration seconds. Prints req/s, p50/p99 latency, non-200
answers and peak resident memory (all processes of the server) for both, and the ratio.

`triggers`: the issue-9 load check. N clients upload good photos alone, then the same N
clients mix in (--trigger-share of their requests) every input that once crashed or
exhausted the service (scripts/serving_load.py). Prints the good photos' throughput both
times and its drop, the answers to each trigger, any 5xx, and peak memory.

`tensors`: N clients sending valid V2 FP32 requests of 10 images (13 MB of JSON each);
prints the answers and peak memory (the bodies-in-flight budget at work).

`v2`: the same photos three ways, on a fresh service each, in alternating rounds:
/predict multipart uploads, and V2 FP32 tensors decoded by the client beforehand (the
image contract) sent as binary tensor data and as JSON. Prints photos a second, latency,
request bytes, server CPU and peak memory per format.

    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export --duration 30
    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export --mode triggers --duration 60
    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export --mode v2 \
        --photos ../shared/data/fullres --duration 15
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
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `serving` from this checkout (serving_load decodes with it)

from serving_load import (  # noqa: E402
    fp32_tensors,
    good_photos,
    run_clients,
    summary,
    triggers,
    v2_photos,
)

NAIVE = ROOT.parent / "shared" / "anchors" / "naive_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
    return pids


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process tree so far."""
    total = 0.0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process tree, in MB."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024.0


class PeakMemory:
    """Samples a process tree's RSS every 0.1 s in a thread; `.peak` in MB."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start(command: list[str], port: int, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{' '.join(command)} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/docs", timeout=1):
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    sys.exit(f"{' '.join(command)} did not answer in 120 s")


def start_service(port: int, model_dir: str, settings: list[str]) -> subprocess.Popen:
    logs = Path(tempfile.mkdtemp(prefix="cats-dogs-benchmark-"))  # a fresh store per run
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "MODEL_DIR": model_dir,
           "LOG_LEVEL": "warning", "STORE_PATH": str(logs / "store.sqlite3"),
           "DATABASE_URL": ""}  # fmt: skip
    env.update(item.split("=", 1) for item in settings)
    process = start([sys.executable, "-m", "serving"], port, env, ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # /docs answers before the model is ready
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    sys.exit("The service did not become ready.")


def start_naive(port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", "naive_server:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return start(command, port, dict(os.environ), NAIVE.parent)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def measure(
    process: subprocess.Popen, port: int, groups: list, duration: float, warmup: float
) -> dict:
    asyncio.run(run_clients(port, groups, warmup))
    cpu_before = tree_cpu_s(process.pid)
    with PeakMemory(process.pid) as memory:
        tally, elapsed = asyncio.run(run_clients(port, groups, duration))
    row = summary(tally, elapsed)
    row["peak_rss_mb"] = memory.peak
    answered = sum(sum(by.values()) for by in tally.statuses.values())
    row["cpu_s"] = tree_cpu_s(process.pid) - cpu_before
    row["cpu_ms_per_request"] = 1000.0 * row["cpu_s"] / max(1, answered)
    row["statuses"] = tally.statuses
    return row


def speed(args: argparse.Namespace, photos: list[Path]) -> dict:
    port, naive_port = free_port(), free_port()
    service = start_service(port, args.model_dir, args.set)
    naive = start_naive(naive_port) if not args.no_naive else None
    rows = {}
    try:
        rows["service"] = measure(service, port, [(good_photos(photos, port), args.clients)],
                                  args.duration, args.warmup)  # fmt: skip
        if naive is not None:
            groups = [(good_photos(photos, naive_port), args.clients)]
            rows["naive"] = measure(naive, naive_port, groups, args.duration, args.warmup)
    finally:
        stop(service)
        if naive is not None:
            stop(naive)
    print(f"\n{args.clients} clients, {args.duration:g} s each, {len(photos)} photos; "
          f"service settings: {' '.join(args.set) or '(defaults)'}")  # fmt: skip
    print("| server | req/s | p50 ms | p99 ms | non-200 | 5xx | peak RSS MB | server CPU ms/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['good_rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['good_not_200']} | {r['server_errors']} | {r['peak_rss_mb']:.0f} | "
              f"{r['cpu_ms_per_request']:.1f} |")  # fmt: skip
    if "naive" in rows:
        print(
            f"\nservice / naive design: {rows['service']['good_rps'] / rows['naive']['good_rps']:.2f}x req/s"
        )
    return rows


def mixed_actions(good: list, bad: list, share: float) -> list:
    """Good uploads with a trigger after every (1 - share) / share of them, cycling both."""
    per_trigger = max(1, round((1.0 - share) / share))
    mixed, g = [], 0
    for trigger in bad * 4:
        mixed += [good[(g + k) % len(good)] for k in range(per_trigger)] + [trigger]
        g += per_trigger
    return mixed


def combine(rounds: list[dict]) -> dict:
    """Rounds of one phase as one: mean rate, worst p99, summed answers, peak memory."""
    statuses: dict[str, dict[int, int]] = {}
    for r in rounds:
        for kind, by in r["statuses"].items():
            for status, n in by.items():
                statuses.setdefault(kind, {})[status] = statuses.get(kind, {}).get(status, 0) + n
    return {
        "good_rps": sum(r["good_rps"] for r in rounds) / len(rounds),
        "p99_ms": max(r["p99_ms"] for r in rounds),
        "server_errors": sum(r["server_errors"] for r in rounds),
        "good_not_200": sum(r["good_not_200"] for r in rounds),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
        "statuses": statuses,
        "rounds": [{k: v for k, v in r.items() if k != "statuses"} for r in rounds],
    }


def trigger_check(args: argparse.Namespace, photos: list[Path]) -> dict:
    port = free_port()
    service = start_service(port, args.model_dir, args.set)
    alone_rounds, mixed_rounds = [], []
    try:
        good = good_photos(photos, port)
        actions = mixed_actions(good, triggers(photos[0], port), args.trigger_share)
        # Alternate the phases so that load from other work on the machine hits both alike.
        for _ in range(args.rounds):
            phase = args.duration / args.rounds
            alone_rounds.append(measure(service, port, [(good, args.clients)], phase, args.warmup))
            mixed_rounds.append(
                measure(service, port, [(actions, args.clients)], phase, args.warmup)
            )
    finally:
        stop(service)
    alone, mixed = combine(alone_rounds), combine(mixed_rounds)
    drop = 1.0 - mixed["good_rps"] / alone["good_rps"]
    print(
        f"\n{args.clients} clients, {args.duration:g} s per phase in {args.rounds} alternating "
        f"rounds; triggers are "
        f"{args.trigger_share:.0%} of the mixed requests"
    )
    print(
        f"good photos alone:          {alone['good_rps']:.0f} req/s, p99 {alone['p99_ms']:.0f} ms"
    )
    print(f"good photos among triggers: {mixed['good_rps']:.0f} req/s, p99 {mixed['p99_ms']:.0f} ms"
          f" -> drop {100 * drop:.1f} %")  # fmt: skip
    print(
        f"5xx: {mixed['server_errors']}; good photos not 200: {mixed['good_not_200']}; "
        f"peak RSS {max(alone['peak_rss_mb'], mixed['peak_rss_mb']):.0f} MB"
    )
    print("| trigger | answers (status: count; 0 = hung up by the client) |")
    print("|---|---|")
    for kind, by_status in sorted(mixed["statuses"].items()):
        print(f"| {kind} | {', '.join(f'{s}: {n}' for s, n in sorted(by_status.items()))} |")
    return {"alone": alone, "mixed": mixed, "good_drop": drop}


def tensor_check(args: argparse.Namespace, photos: list[Path]) -> dict:
    """Many clients sending valid, large V2 FP32 requests: memory must stay bounded."""
    port = free_port()
    service = start_service(port, args.model_dir, args.set)
    try:
        row = measure(service, port, [([fp32_tensors(port)], args.clients)], args.duration, 0.0)
    finally:
        stop(service)
    print(f"\n{args.clients} clients sending 10-image FP32 tensors for {args.duration:g} s: "
          f"answers {row['statuses'].get('fp32_tensor')}, peak RSS {row['peak_rss_mb']:.0f} MB")  # fmt: skip
    return row


def v2_check(args: argparse.Namespace, photos: list[Path]) -> dict:
    """The same photos as /predict multipart uploads, V2 binary FP32 and V2 JSON FP32
    (decoded by the client beforehand), each on a fresh service, in alternating rounds."""
    size = json.loads((Path(args.model_dir) / "model.json").read_text())["input"]["size"]
    formats = {
        "/predict multipart": lambda port: (good_photos(photos, port), 1),
        "V2 binary FP32": lambda port: (v2_photos(photos, port, size, args.v2_batch, True), args.v2_batch),
        "V2 JSON FP32": lambda port: (v2_photos(photos, port, size, args.v2_batch, False), args.v2_batch),
    }  # fmt: skip
    rounds: dict[str, list[dict]] = {name: [] for name in formats}
    for _ in range(args.rounds):
        for name, build in formats.items():
            port = free_port()
            actions, per_request = build(port)
            service = start_service(port, args.model_dir, args.set)
            try:
                row = measure(service, port, [(actions, args.clients)],
                              args.duration / args.rounds, args.warmup)  # fmt: skip
            finally:
                stop(service)
            row["photos_per_request"] = per_request
            row["request_bytes_per_photo"] = sum(len(a.payload) for a in actions) / (
                len(actions) * per_request
            )
            rounds[name].append(row)
    results = {name: combine(rows) | per_photo(rows) for name, rows in rounds.items()}
    print_v2(args, photos, size, results)
    return results


def per_photo(rows: list[dict]) -> dict:
    """A format's rounds as photos a second and server CPU per photo."""
    k = rows[0]["photos_per_request"]
    return {
        "photos_per_s": k * sum(r["good_rps"] for r in rows) / len(rows),
        # all the server's CPU over the photos it answered 200 (refusals cost CPU too)
        "cpu_ms_per_photo": 1000.0
        * sum(r["cpu_s"] for r in rows)
        / max(1, k * sum(r["statuses"].get("good", {}).get(200, 0) for r in rows)),
        "p50_ms": sum(r["p50_ms"] for r in rows) / len(rows),
        "request_kb_per_photo": rows[0]["request_bytes_per_photo"] / 1024,
    }


def print_v2(args: argparse.Namespace, photos: list[Path], size: int, results: dict) -> None:
    print(f"\n{args.clients} clients, {args.duration:g} s per format in {args.rounds} "
          f"alternating rounds (a fresh service each), {len(photos)} photos at {size} px, "
          f"V2: {args.v2_batch} photo(s) a request; settings: {' '.join(args.set) or '(defaults)'}")  # fmt: skip
    print("| format | photos/s | p50 ms/request | p99 ms/request | request KB/photo | "
          "server CPU ms/photo answered | peak RSS MB | non-200 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['photos_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['request_kb_per_photo']:.0f} | {r['cpu_ms_per_photo']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {r['good_not_200']} |")  # fmt: skip
    base = results["/predict multipart"]["photos_per_s"]
    print(
        f"\nV2 binary / multipart: {results['V2 binary FP32']['photos_per_s'] / base:.2f}x photos/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["speed", "triggers", "tensors", "v2"], default="speed")
    parser.add_argument("--model-dir", default="models/export")
    parser.add_argument("--photos", default=str(ROOT.parent / "shared/data/fullres"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load")
    parser.add_argument("--set", action="append", default=[], help="service env KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=3, help="triggers mode: alternations")
    parser.add_argument("--trigger-share", type=float, default=0.2, help="triggers mode")
    parser.add_argument("--v2-batch", type=int, default=1, help="v2 mode: photos a request")
    parser.add_argument("--no-naive", action="store_true", help="skip the course design")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()
    photos = sorted(Path(args.photos).glob("*.jpg"))
    if not photos:
        sys.exit(f"No JPEGs in {args.photos}")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} CPUs")
    modes = {"speed": speed, "triggers": trigger_check, "tensors": tensor_check, "v2": v2_check}
    result = modes[args.mode](args, photos)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"settings": args.set, **result}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
