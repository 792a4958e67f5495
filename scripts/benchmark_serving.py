"""Load benchmark of the prediction service, against the original course design.

`speed` (default): starts `python -m serving` (settings via --set KEY=VALUE) and, with
--anchor PATH, the fifty-line ONNX Runtime server (ort_min_server.py, MODEL_DIR = the same
bundle, under uvicorn) and, with --naive PATH, the course's original server
(naive_server.py: torch eager on the event loop) side by side on free 127.0.0.1 ports,
then runs the same clients against each in turn: N keep-alive connections POSTing the
full-size JPEGs of --photos (default tests/data/fullres) to /predict as multipart uploads
for --duration seconds. Prints per server req/s, p50/p99 latency, non-200 answers, peak
resident memory (all processes of the server), cores used and CPU ms per request; the
service's CPU per request split into decode, inference, recording and the rest (HTTP,
JSON, ...) from its `stage_cpu_seconds_total`; the limit computed on this machine
(loadtest/limit.py: cores x 1000 / (graph ms + decode ms per photo) at the batch size the
service served) and how close each server comes; and the ratios service / anchor and
service / naive.

`triggers`: the issue-9 load check. N clients upload good photos alone, then the same N
clients mix in (--trigger-share of their requests) every input that once crashed or
exhausted the service (loadtest/payloads.py). Prints the good photos' throughput both
times and its drop, the answers to each trigger, any 5xx, and peak memory.

`tensors`: N clients sending valid V2 FP32 requests of 10 images (13 MB of JSON each);
prints the answers and peak memory (the bodies-in-flight budget at work).

`shadow`: the same clients against the service alone and with a challenger loaded
(CHALLENGER_MODEL_DIR=--challenger, default the same bundle), in alternating rounds;
prints req/s and p50/p99 per round, the mean p99 ratio and the shadow series
(agreement, scored, dropped) the challenger's service exported.

`v2`: the same photos three ways, on a fresh service each, in alternating rounds:
/predict multipart uploads, and V2 FP32 tensors decoded by the client beforehand (the
image contract) sent as binary tensor data and as JSON. Prints photos a second, latency,
request bytes, server CPU and peak memory per format.

    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export --duration 30 \
        --photos ../shared/data/fullres --anchor ../shared/anchors/ort_min_server.py \
        --naive ../shared/anchors/naive_server.py
    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export --mode triggers --duration 60
    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export --mode v2 \
        --photos ../shared/data/fullres --duration 15
    .venv/bin/python scripts/benchmark_serving.py --model-dir models/export --mode shadow \
        --duration 20 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtest.clients import run_clients, summary
from loadtest.limit import compute_limit
from loadtest.payloads import fp32_tensors, good_photos, triggers, v2_photos
from loadtest.processes import PeakMemory, free_port, start, stop, tree_cpu_s

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "fullres"  # the 50 full-size uploads, committed


def start_service(port: int, model_dir: str, settings: list[str]) -> subprocess.Popen:
    """`python -m serving` on `port` with a fresh store, once it is ready (model loaded)."""
    logs = Path(tempfile.mkdtemp(prefix="cats-dogs-benchmark-"))  # a fresh store per run
    # RATE_LIMIT off: the service's capacity is measured, not one client's share of it.
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "MODEL_DIR": model_dir,
           "LOG_LEVEL": "warning", "STORE_PATH": str(logs / "store.sqlite3"),
           "DATABASE_URL": "", "AUTH_DISABLED": "true", "RATE_LIMIT": "off"}  # fmt: skip
    env.update(item.split("=", 1) for item in settings)
    ready = f"http://127.0.0.1:{port}/health/ready"
    return start([sys.executable, "-m", "serving"], ready, env, ROOT)


def start_naive(port: int, naive: Path) -> subprocess.Popen:
    """The course's original server (`naive_server.py`, torch eager on the event loop)."""
    command = [sys.executable, "-m", "uvicorn", f"{naive.stem}:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return start(command, f"http://127.0.0.1:{port}/docs", dict(os.environ), naive.parent)


def start_anchor(port: int, anchor: Path, model_dir: str) -> subprocess.Popen:
    """The fifty-line server (`ort_min_server.py`) over the same bundle, under uvicorn."""
    command = [sys.executable, "-m", "uvicorn", f"{anchor.stem}:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "MODEL_DIR": str(Path(model_dir).resolve())}
    return start(command, f"http://127.0.0.1:{port}/docs", env, anchor.parent)


def scrape(port: int, prefixes: tuple[str, ...]) -> dict[str, float]:
    """The series of a running service's /metrics whose names start with `prefixes`."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return {k: float(v) for k, _, v in (x.rpartition(" ") for x in lines)
            if k.startswith(prefixes)}  # fmt: skip


SERVICE_SERIES = ("stage_cpu_seconds_total", "inference_batch_size_")


def stage_split(before: dict, after: dict, cpu_s: float, answered: int) -> dict:
    """CPU ms per request by stage; the rest of the process's CPU is HTTP, JSON and so on."""
    n = max(1, answered)
    split = {}
    for key in after:
        if key.startswith("stage_cpu_seconds_total"):
            stage = key.split('"')[1]
            split[stage] = 1000.0 * (after[key] - before.get(key, 0.0)) / n
    split["http_json_rest"] = 1000.0 * cpu_s / n - sum(split.values())
    calls = after["inference_batch_size_count"] - before["inference_batch_size_count"]
    images = after["inference_batch_size_sum"] - before["inference_batch_size_sum"]
    return {"cpu_ms_by_stage": split, "mean_batch": images / max(1.0, calls)}


def measure(
    process: subprocess.Popen,
    port: int,
    groups: list,
    duration: float,
    warmup: float,
    service: bool = False,
) -> dict:
    """One load run; with `service`, also its CPU by stage and mean batch (from /metrics)."""
    asyncio.run(run_clients(port, groups, warmup))
    series = scrape(port, SERVICE_SERIES) if service else {}
    cpu_before, clients_before = tree_cpu_s(process.pid), time.process_time()
    with PeakMemory(process.pid) as memory:
        tally, elapsed = asyncio.run(run_clients(port, groups, duration))
    row = summary(tally, elapsed)
    # The clients share the machine: their CPU is what the servers could not have.
    row["client_cores"] = (time.process_time() - clients_before) / elapsed
    row["peak_rss_mb"] = memory.peak
    answered = sum(sum(by.values()) for by in tally.statuses.values())
    row["cpu_s"] = tree_cpu_s(process.pid) - cpu_before
    row["cores"] = row["cpu_s"] / elapsed
    row["cpu_ms_per_request"] = 1000.0 * row["cpu_s"] / max(1, answered)
    row["statuses"] = tally.statuses
    if service:
        row |= stage_split(series, scrape(port, SERVICE_SERIES), row["cpu_s"], answered)
    return row


def start_servers(args: argparse.Namespace) -> dict[str, tuple[subprocess.Popen, int]]:
    """The service and, when asked, the anchor and the naive server, each on a free port."""
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        port = free_port()
        servers["service"] = (start_service(port, args.model_dir, args.set), port)
        if args.anchor:
            port = free_port()
            servers["anchor"] = (start_anchor(port, args.anchor, args.model_dir), port)
        if args.naive:
            port = free_port()
            servers["naive"] = (start_naive(port, args.naive), port)
    except RuntimeError:
        for process, _ in servers.values():
            stop(process)
        raise
    return servers


def speed(args: argparse.Namespace, photos: list[Path]) -> dict:
    servers = start_servers(args)
    rows = {}
    try:
        for name, (process, port) in servers.items():
            groups = [(good_photos(photos, port), args.clients)]
            rows[name] = measure(process, port, groups, args.duration, args.warmup,
                                 service=name == "service")  # fmt: skip
    finally:
        for process, _ in servers.values():
            stop(process)
    batch = max(1, round(rows["service"]["mean_batch"]))
    limit = compute_limit(Path(args.model_dir), photos, batch)
    for row in rows.values():
        row["share_of_limit"] = row["good_rps"] / limit.photos_per_s
        row["cpu_per_graph"] = row["cpu_ms_per_request"] / limit.graph_ms
    print_speed(args, photos, rows, limit.as_dict())
    return {"servers": rows, "limit": limit.as_dict()}


def print_speed(args: argparse.Namespace, photos: list[Path], rows: dict, limit: dict) -> None:
    names = {"service": "service", "anchor": "fifty-line ORT server", "naive": "course design"}
    print(f"\n{args.clients} clients, {args.duration:g} s each, {len(photos)} photos; "
          f"service settings: {' '.join(args.set) or '(defaults)'}")  # fmt: skip
    print("| server | req/s | p50 ms | p99 ms | non-200 | 5xx | peak RSS MB | cores used | "
          "CPU ms/req | CPU / graph | share of limit |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {names[name]} | {r['good_rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['good_not_200']} | {r['server_errors']} | {r['peak_rss_mb']:.0f} | "
              f"{r['cores']:.2f} | {r['cpu_ms_per_request']:.2f} | "
              f"{r['cpu_per_graph']:.2f}x | {100 * r['share_of_limit']:.0f} % |")  # fmt: skip
    split = rows["service"]["cpu_ms_by_stage"]
    print("\nservice CPU ms per request: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
          + f"; mean batch {rows['service']['mean_batch']:.2f} images per ONNX Runtime call")  # fmt: skip
    clients = ", ".join(f"{names[k]} {r['client_cores']:.2f}" for k, r in rows.items())
    print(f"cores used by the load generator (same machine) against each: {clients}")
    print(f"limit: {limit['cores']} cores x 1000 / ({limit['graph_ms']:.2f} ms graph at batch "
          f"{limit['batch']} + {limit['decode_ms']:.2f} ms decode) = "
          f"{limit['photos_per_s']:.0f} photos/s")  # fmt: skip
    for other in ("anchor", "naive"):
        if other in rows:
            ratio = rows["service"]["good_rps"] / rows[other]["good_rps"]
            print(f"service / {names[other]}: {ratio:.2f}x req/s")


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


def shadow_metrics(port: int) -> dict[str, float]:
    """The shadow series of a running service's /metrics (name{labels} -> value)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return {k: float(v) for k, _, v in (x.rpartition(" ") for x in lines)
            if k.startswith("shadow_")}  # fmt: skip


def shadow_check(args: argparse.Namespace, photos: list[Path]) -> dict:
    """The same clients without and with a challenger loaded, in alternating rounds."""
    challenger = args.challenger or args.model_dir
    ports = {"champion alone": free_port(), "with challenger": free_port()}
    extra = {"champion alone": [], "with challenger": [f"CHALLENGER_MODEL_DIR={challenger}"]}
    services = {k: start_service(ports[k], args.model_dir, args.set + extra[k]) for k in ports}
    rounds: dict[str, list[dict]] = {k: [] for k in ports}
    try:
        for _ in range(args.rounds):
            for name, service in services.items():
                groups = [(good_photos(photos, ports[name]), args.clients)]
                rounds[name].append(
                    measure(service, ports[name], groups, args.duration, args.warmup)
                )
        shadow = shadow_metrics(ports["with challenger"])
    finally:
        for service in services.values():
            stop(service)
    print(f"\n{args.clients} clients, {args.rounds} x {args.duration:g} s each, alternating; "
          f"challenger {challenger}; settings: {' '.join(args.set) or '(defaults)'}")  # fmt: skip
    print("| service | round | req/s | p50 ms | p99 ms | non-200 | 5xx | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in rounds.items():
        for i, r in enumerate(rows, 1):
            print(f"| {name} | {i} | {r['good_rps']:.0f} | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r['good_not_200']} | {r['server_errors']} | "
                  f"{r['peak_rss_mb']:.0f} |")  # fmt: skip
    p99 = {k: sum(r["p99_ms"] for r in v) / len(v) for k, v in rounds.items()}
    print(f"\nmean p99: alone {p99['champion alone']:.1f} ms, with challenger "
          f"{p99['with challenger']:.1f} ms (ratio {p99['with challenger'] / p99['champion alone']:.3f})")  # fmt: skip
    print("shadow series: " + ", ".join(f"{k} {v:g}" for k, v in sorted(shadow.items())))
    return {"rounds": rounds, "mean_p99_ms": p99, "shadow_metrics": shadow}


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
    parser.add_argument(
        "--mode", choices=["speed", "triggers", "tensors", "v2", "shadow"], default="speed"
    )
    parser.add_argument("--model-dir", default="models/export")
    parser.add_argument(
        "--photos", type=Path, default=PHOTOS, help="a folder of JPEGs [%(default)s]"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load")
    parser.add_argument("--set", action="append", default=[], help="service env KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=3, help="triggers mode: alternations")
    parser.add_argument("--trigger-share", type=float, default=0.2, help="triggers mode")
    parser.add_argument("--v2-batch", type=int, default=1, help="v2 mode: photos a request")
    parser.add_argument("--anchor", type=Path, default=None,
                        help="speed mode: the fifty-line ort_min_server.py to compare with "
                        "(../shared/anchors/ort_min_server.py on the team's machines)")  # fmt: skip
    parser.add_argument("--naive", type=Path, default=None,
                        help="speed mode: the course's naive_server.py to compare with "
                        "(../shared/anchors/naive_server.py on the team's machines)")  # fmt: skip
    parser.add_argument("--challenger", default=None,
                        help="shadow mode: the challenger bundle [--model-dir]")  # fmt: skip
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()
    photos = sorted(args.photos.glob("*.jpg"))
    if not photos:
        sys.exit(f"No JPEGs in {args.photos}")
    for option in ("naive", "anchor"):
        path = getattr(args, option)
        if path and not path.is_file():
            sys.exit(f"No such file: {path} (--{option} wants a server's .py file)")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average), {os.cpu_count()} CPUs")
    modes = {
        "speed": speed,
        "triggers": trigger_check,
        "tensors": tensor_check,
        "v2": v2_check,
        "shadow": shadow_check,
    }
    try:
        result = modes[args.mode](args, photos)
    except RuntimeError as exc:  # a server that would not start
        sys.exit(str(exc))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"settings": args.set, **result}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
