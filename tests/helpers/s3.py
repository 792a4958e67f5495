"""An S3 API on loopback (moto's server) and a client for it, for the DVC remote tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3

from tests.helpers.servers import free_port, running, start_server

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3(workdir: Path) -> Iterator[str]:
    """moto's S3 API on a free 127.0.0.1 port; yields its URL, stops it by PID after."""
    port = free_port()
    moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = start_server(
        moto, port, workdir / "moto.log", health_path="/", healthy=lambda status: status < 500
    )
    with running(server):
        yield server.url


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
