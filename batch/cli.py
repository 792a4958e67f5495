"""`cats-dogs-batch SOURCE --out FILE`: score every file of SOURCE with the bundle.

SOURCE is a folder, a text file listing paths (one a line), or an S3 prefix
(`s3://bucket/prefix`; endpoint from --s3-endpoint or AWS_ENDPOINT_URL). Rows go to CSV,
JSON lines or Parquet; a rerun with the same --out skips the files already written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from batch import output, scoring, sources
from contracts.bundle import BundleManifest


@dataclass(frozen=True)
class Summary:
    listed: int
    skipped: int  # already in the output (resumed)
    scored: int
    refused: int
    seconds: float


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="cats-dogs-batch", description=__doc__.split("\n")[0])
    ap.add_argument("source", help="folder, list file, or s3://bucket/prefix")
    ap.add_argument("--out", required=True,
                    help="output file (.csv, .jsonl, .parquet), or s3://bucket/key: written "
                    "locally, uploaded at the end, downloaded first to resume")  # fmt: skip
    ap.add_argument("--format", choices=output.FORMATS, default=None, help="default: from --out")
    ap.add_argument("--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR") or "models/export"),
                    help="the bundle [env MODEL_DIR]")  # fmt: skip
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes, each with its own ONNX Runtime session (default: every core)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per process")
    ap.add_argument("--chunk", type=int, default=32, help="files per task (and per flush)")
    ap.add_argument("--s3-endpoint", default=os.environ.get("AWS_ENDPOINT_URL"),
                    help="S3 API URL for a non-AWS store [env AWS_ENDPOINT_URL]")  # fmt: skip
    ap.add_argument("--shard-index", type=int, default=int(os.environ.get("JOB_COMPLETION_INDEX", "0")),
                    help="this shard [env JOB_COMPLETION_INDEX, set by an indexed Job]")  # fmt: skip
    ap.add_argument("--shard-count", type=int, default=1, help="shards in all")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.workers < 1 or args.threads < 1 or args.chunk < 1 or args.shard_count < 1:
        ap.error("--workers, --threads, --chunk and --shard-count must be at least 1")
    return args


def _chunks(names: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(names), size):
        yield names[i : i + size]


def _results(args: argparse.Namespace, todo: list[str]) -> Iterator[list[scoring.Row]]:
    """Rows chunk by chunk: in this process for one worker, else from a process pool."""
    init = (str(args.model_dir), args.threads, args.s3_endpoint)
    if args.workers == 1:
        scoring.init_worker(*init)
        yield from map(scoring.score_chunk, _chunks(todo, args.chunk))
        return
    with ProcessPoolExecutor(args.workers, initializer=scoring.init_worker, initargs=init) as pool:
        yield from pool.map(scoring.score_chunk, _chunks(todo, args.chunk))


def run(args: argparse.Namespace) -> Summary:
    """Score into a local file; an S3 output is fetched first (resume) and uploaded after."""
    if not str(args.out).startswith("s3://"):
        return score_into(args, Path(args.out))
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / Path(sources.S3Location.parse(args.out).key).name
        sources.download_if_present(args.out, local, args.s3_endpoint)
        summary = score_into(args, local)
        sources.upload(local, args.out, args.s3_endpoint)
        return summary


def score_into(args: argparse.Namespace, out: Path) -> Summary:
    """List, skip what the output holds, score the rest, write as chunks finish."""
    start = time.monotonic()
    manifest = BundleManifest.read(args.model_dir)
    writer = output.Writer(out, output.format_of(out, args.format), manifest.classes)
    listed = sources.shard(
        sources.list_inputs(args.source, args.s3_endpoint), args.shard_index, args.shard_count
    )
    done = writer.done()
    todo = [name for name in listed if name not in done]
    scored = refused = 0
    from tqdm import tqdm

    with tqdm(total=len(todo), unit="photo", disable=args.no_progress, file=sys.stderr) as bar:
        for rows in _results(args, todo):
            writer.append(rows)
            refused += sum(1 for r in rows if r.error)
            scored += sum(1 for r in rows if not r.error)
            bar.update(len(rows))
    writer.finish()
    return Summary(len(listed), len(listed) - len(todo), scored, refused,
                   round(time.monotonic() - start, 3))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    summary = run(args)
    print(
        f"{summary.listed} files in shard {args.shard_index}/{args.shard_count}: "
        f"{summary.skipped} already in {args.out}, {summary.scored} scored, "
        f"{summary.refused} refused, in {summary.seconds:.1f} s"
    )
    return 0
