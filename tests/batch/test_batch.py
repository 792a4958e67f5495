"""cats-dogs-batch on the committed photos plus bad files, with the tiny real bundle."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import tomllib
import zlib
from pathlib import Path

import pytest

from batch import cli, output, scoring, sources
from contracts.bundle import BundleManifest
from tests.helpers.photos import SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = (
    sorted((SAMPLE_DIR / "cat").glob("*.jpg"))[:6] + sorted((SAMPLE_DIR / "dog").glob("*.jpg"))[:6]
)


def _png_header(width: int, height: int) -> bytes:
    """A valid-looking PNG of width x height whose pixel data is empty: a few dozen bytes
    that would decode to gigabytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Twelve real photos and four bad files: truncated JPEG, text, empty, a huge PNG."""
    root = tmp_path / "photos"
    for photo in PHOTOS:
        target = root / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(photo.read_bytes())
    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.jpg").write_bytes(PHOTOS[0].read_bytes()[:600])
    (bad / "notes.txt").write_text("not a photo\n")
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "huge.png").write_bytes(_png_header(100_000, 100_000))
    (root / ".hidden.jpg").write_bytes(PHOTOS[0].read_bytes())  # hidden: not listed
    return root


def _rows(path: Path) -> dict[str, dict]:
    with path.open(newline="") as fh:
        return {"/".join(Path(r["file"]).parts[-2:]): r for r in csv.DictReader(fh)}


def test_batch_scores_photos_and_turns_bad_files_into_rows(
    folder: Path, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    args = cli.parse_args([str(folder), "--out", str(out), "--model-dir", str(tiny_bundle_dir),
                           "--workers", "2", "--chunk", "5", "--no-progress"])  # fmt: skip
    summary = cli.run(args)
    assert (summary.listed, summary.scored, summary.refused) == (16, 12, 4)
    rows = _rows(out)
    manifest = BundleManifest.read(tiny_bundle_dir)
    assert len(rows) == 16 and "photos/.hidden.jpg" not in rows
    reasons = {name: rows[f"bad/{name}"]["error"] for name in
               ("truncated.jpg", "notes.txt", "empty.jpg", "huge.png")}  # fmt: skip
    assert reasons == {"truncated.jpg": "corrupt", "notes.txt": "not_an_image",
                       "empty.jpg": "empty", "huge.png": "too_many_pixels"}  # fmt: skip
    assert all(rows[f"bad/{name}"]["label"] == "" and rows[f"bad/{name}"]["detail"]
               for name in reasons)  # fmt: skip
    for photo in PHOTOS:
        row = rows[f"{photo.parent.name}/{photo.name}"]
        assert row["error"] == "" and row["label"] in manifest.classes
        p = [float(row[f"p_{c}"]) for c in manifest.classes]
        assert sum(p) == pytest.approx(1.0, abs=1e-5)
        assert float(row["confidence"]) == pytest.approx(max(p))
        assert row["model_version"] == manifest.version


def test_batch_answers_as_the_service_scorer_does(folder: Path, tiny_bundle_dir: Path) -> None:
    """Same image contract and bundle: the batch probabilities equal a direct ORT run over
    contracts.imaging.load, photo by photo."""
    import numpy as np
    import onnxruntime as ort

    from contracts import imaging

    manifest = BundleManifest.read(tiny_bundle_dir)
    session = ort.InferenceSession(str(manifest.verified_model_file(tiny_bundle_dir)))
    rows = scoring.Scorer(tiny_bundle_dir).score([str(p) for p in PHOTOS[:3]])
    for photo, row in zip(PHOTOS[:3], rows, strict=True):
        pixels = imaging.load(photo.read_bytes(), manifest.size)
        (probs,) = session.run(None, {"image": imaging.to_batch([pixels])})[:1]
        assert [row.probabilities[c] for c in manifest.classes] == pytest.approx(
            np.asarray(probs[0]).tolist(), abs=1e-5
        )


def test_a_resumed_run_does_no_work_twice(
    folder: Path, tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    score = scoring.Scorer.score

    def counting(self, names):
        seen.extend(names)
        return score(self, names)

    monkeypatch.setattr(scoring.Scorer, "score", counting)  # one worker: in this process
    out = tmp_path / "scores.jsonl"
    first_half = tmp_path / "list.txt"
    listed = sources.list_inputs(str(folder))
    first_half.write_text("\n".join(listed[:7]) + "\n")
    common = ["--out", str(out), "--model-dir", str(tiny_bundle_dir), "--workers", "1",
              "--chunk", "3", "--no-progress"]  # fmt: skip
    cli.run(cli.parse_args([str(first_half), *common]))
    # A run killed mid-write leaves half a line: it is cut off and that file redone.
    with out.open("a") as fh:
        fh.write('{"file": "' + listed[9])
    summary = cli.run(cli.parse_args([str(folder), *common]))
    assert sorted(seen) == sorted(listed)  # every file scored exactly once over two runs
    assert (summary.skipped, summary.scored + summary.refused) == (7, 9)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["file"] for r in lines) == sorted(listed)
    seen.clear()
    again = cli.run(cli.parse_args([str(folder), *common]))
    assert (seen, again.skipped) == ([], 16)


def test_parquet_output_resumes_and_holds_every_column(
    folder: Path, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "scores.parquet"
    base = [
        "--out",
        str(out),
        "--model-dir",
        str(tiny_bundle_dir),
        "--workers",
        "1",
        "--no-progress",
    ]
    listed = sources.list_inputs(str(folder))
    (tmp_path / "some.txt").write_text("\n".join(listed[:5]))
    cli.run(cli.parse_args([str(tmp_path / "some.txt"), *base]))
    assert pq.read_table(out).num_rows == 5
    summary = cli.run(cli.parse_args([str(folder), *base]))
    assert summary.skipped == 5
    table = pq.read_table(out)
    classes = BundleManifest.read(tiny_bundle_dir).classes
    assert table.column_names == output.columns(classes)
    assert sorted(table.column("file").to_pylist()) == sorted(listed)
    assert not (tmp_path / "scores.parquet.partial.jsonl").exists()


def test_shards_split_the_inputs_without_overlap() -> None:
    names = [f"s3://bucket/photos/{i}.jpg" for i in range(200)]
    parts = [sources.shard(names, i, 4) for i in range(4)]
    assert sorted(name for part in parts for name in part) == sorted(names)
    assert all(20 < len(p) < 80 for p in parts)  # a hash spreads them
    assert sources.shard(list(reversed(names)), 2, 4) == list(reversed(parts[2]))
    with pytest.raises(ValueError, match="shard index"):
        sources.shard(names, 4, 4)


def test_bad_arguments_and_sources_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        sources.list_inputs(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="output format"):
        output.format_of(tmp_path / "scores.xlsx", None)
    with pytest.raises(SystemExit):
        cli.parse_args(["x", "--out", "y.csv", "--workers", "0"])


def test_console_script_is_declared_and_runs_as_a_module(
    folder: Path, tiny_bundle_dir: Path, tmp_path: Path
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["cats-dogs-batch"] == "batch.cli:main"
    done = subprocess.run(
        [sys.executable, "-m", "batch", str(folder / "cat"), "--out", str(tmp_path / "o.csv"),
         "--model-dir", str(tiny_bundle_dir), "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "6 files in shard 0/1: 0 already in" in done.stdout and "6 scored" in done.stdout
    assert "photo/s" in done.stderr  # the progress bar


def test_s3_prefix_is_scored_from_the_s3_api(
    s3_endpoint: str, tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.s3 import CREDENTIALS, s3_client

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="uploads")
    for photo in PHOTOS[:4]:
        client.put_object(Bucket="uploads", Key=f"day1/{photo.name}", Body=photo.read_bytes())
    client.put_object(Bucket="uploads", Key="day1/broken.jpg", Body=b"\xff\xd8\xff")
    client.put_object(Bucket="uploads", Key="day2/other.jpg", Body=PHOTOS[5].read_bytes())
    out = tmp_path / "s3.csv"
    summary = cli.run(cli.parse_args(  # prefix in, local file out
        ["s3://uploads/day1/", "--out", str(out), "--model-dir", str(tiny_bundle_dir),
         "--s3-endpoint", s3_endpoint, "--workers", "2", "--no-progress"]
    ))  # fmt: skip
    assert (summary.listed, summary.scored, summary.refused) == (5, 4, 1)
    rows = _rows(out)
    assert set(rows) == {f"day1/{p.name}" for p in PHOTOS[:4]} | {"day1/broken.jpg"}
    assert rows["day1/broken.jpg"]["error"] and rows["day1/broken.jpg"]["label"] == ""
    assert all(r["file"].startswith("s3://uploads/day1/") for r in rows.values())

    # Output to S3, as the indexed Job writes it: uploaded at the end, fetched to resume.
    client.put_object(Bucket="uploads", Key="day1/late.jpg", Body=PHOTOS[6].read_bytes())
    s3_out = ["--out", "s3://uploads/scores/shard-0.csv", "--model-dir", str(tiny_bundle_dir),
              "--s3-endpoint", s3_endpoint, "--workers", "1", "--no-progress"]  # fmt: skip
    first = cli.run(cli.parse_args(["s3://uploads/day1/", *s3_out]))
    assert (first.skipped, first.scored) == (0, 5)
    client.put_object(Bucket="uploads", Key="day1/later.jpg", Body=PHOTOS[7].read_bytes())
    second = cli.run(cli.parse_args(["s3://uploads/day1/", *s3_out]))
    assert (second.skipped, second.scored) == (6, 1)
    body = client.get_object(Bucket="uploads", Key="scores/shard-0.csv")["Body"].read().decode()
    assert len(body.splitlines()) == 1 + 7  # header and every object of the prefix
