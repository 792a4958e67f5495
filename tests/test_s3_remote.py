"""Data versioning through a real S3 API: dvc push to a bucket, wipe, dvc pull, compare.

moto's standalone server plays S3 on 127.0.0.1; DVC talks to it with dvc-s3 exactly as
it would to AWS or MinIO (README: "Your own S3 remote").
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from tests.conftest import free_port, run, venv_env

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture()
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=(tmp_path / "moto.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("moto_server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_push_and_pull_through_s3(tmp_path: Path, shared_data: Path, s3_endpoint: str) -> None:
    s3_client(s3_endpoint).create_bucket(Bucket="cats-dogs-data")
    repo = tmp_path / "repo"
    raw = repo / "data" / "raw"
    for label in ("cat", "dog"):
        (raw / label).mkdir(parents=True)
        for photo in sorted((shared_data / "cats_dogs" / label).glob("*.jpg"))[:25]:
            shutil.copy(photo, raw / label / photo.name)
    before = digests(raw)

    env = {**venv_env(), **CREDENTIALS}

    def dvc(*args: str) -> str:
        result = subprocess.run(
            ["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    run(["git", "init", "-q"], repo)
    dvc("init", "-q")
    dvc("add", "data/raw")
    dvc("remote", "add", "-d", "storage", "s3://cats-dogs-data/dvcstore")
    dvc("remote", "modify", "storage", "endpointurl", s3_endpoint)
    dvc("push")

    listed = s3_client(s3_endpoint).list_objects_v2(Bucket="cats-dogs-data", Prefix="dvcstore/")
    assert listed["KeyCount"] >= 50  # 50 photos + the directory listing object

    shutil.rmtree(raw)
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc("pull")
    assert digests(raw) == before
