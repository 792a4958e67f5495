"""Where the photos come from: a folder, a file listing paths, or an S3 prefix.

Each input is named by a stable string (a local path or `s3://bucket/key`), which is what
the output's `file` column holds and what a resumed run skips.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an S3 URL (s3://bucket/prefix): {url}")
        return cls(parsed.netloc, parsed.path.lstrip("/"))


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client; credentials and region from the usual AWS environment."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or None)


def _s3_keys(url: str, endpoint_url: str | None) -> Iterator[str]:
    where = S3Location.parse(url)
    pages = s3_client(endpoint_url).get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=where.bucket, Prefix=where.key):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                yield f"s3://{where.bucket}/{item['Key']}"


def list_inputs(source: str, endpoint_url: str | None = None) -> list[str]:
    """Every input of `source`, sorted: a folder's regular files (recursively, hidden ones
    left out), the lines of a list file, or the objects under an S3 prefix.

    Every file is listed, not only image suffixes: a file that is not an image becomes a
    row with its reason, so nothing is silently left unscored.
    """
    if source.startswith("s3://"):
        return sorted(_s3_keys(source, endpoint_url))
    path = Path(source)
    if path.is_dir():
        return sorted(
            str(p)
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return sorted({line.strip() for line in lines if line.strip() and not line.startswith("#")})
    raise FileNotFoundError(f"no such folder, list file or S3 prefix: {source}")


def shard(inputs: list[str], index: int, count: int) -> list[str]:
    """The inputs of shard `index` of `count`, by a stable hash of the name (so a pod of an
    indexed Job always gets the same files, whatever order the listing came in)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in [0, {count})")
    return [name for name in inputs if zlib.crc32(name.encode()) % count == index]


def read_bytes(name: str, max_bytes: int, endpoint_url: str | None = None, client=None) -> bytes:
    """The file's bytes, reading at most `max_bytes + 1` (so an oversized file is refused by
    the image contract without being read whole)."""
    if name.startswith("s3://"):
        where = S3Location.parse(name)
        client = client or s3_client(endpoint_url)
        body = client.get_object(Bucket=where.bucket, Key=where.key, Range=f"bytes=0-{max_bytes}")
        return body["Body"].read()
    with open(name, "rb") as fh:
        return fh.read(max_bytes + 1)


def download_if_present(url: str, local: Path, endpoint_url: str | None = None) -> bool:
    """Fetch an earlier run's output object (to resume from it); False when there is none."""
    where = S3Location.parse(url)
    client = s3_client(endpoint_url)
    try:
        client.head_object(Bucket=where.bucket, Key=where.key)
    except client.exceptions.ClientError:
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    client.download_file(where.bucket, where.key, str(local))
    return True


def upload(local: Path, url: str, endpoint_url: str | None = None) -> None:
    where = S3Location.parse(url)
    s3_client(endpoint_url).upload_file(str(local), where.bucket, where.key)
