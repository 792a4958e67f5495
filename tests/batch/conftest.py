from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.s3 import moto_s3


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """moto's S3 API on a free loopback port, stopped by PID after the test."""
    with moto_s3(tmp_path) as url:
        yield url
