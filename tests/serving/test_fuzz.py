"""Property-based fuzzing of the whole OpenAPI (schemathesis) against a real server.

Schemathesis generates requests for every operation of /openapi.json, valid and
invalid, and sends them to `python -m serving` on 127.0.0.1 with the real bundle.
Whatever a client sends, the answer is never a server error (5xx).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.helpers.servers import Server
from tests.helpers.service import start_server

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def fuzzed_server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Rate limits off (start_server's default): the fuzzer looks for 5xx answers, and 429s
    # would hide routes from it (tests/serving/attacks checks the limits).
    server = start_server(bundle_dir, tmp_path_factory.mktemp("fuzz"))
    yield server
    server.stop()


def fuzz(operation, mode: GenerationMode, server: Server, seen: Counter) -> None:
    """Send `EXAMPLES_PER_OPERATION` generated requests of one operation; no 5xx."""

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case) -> None:
        response = case.call(base_url=server.url, timeout=30)
        seen[response.status_code // 100] += 1
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        )

    try:
        send()
    except Unsatisfiable:  # nothing invalid to send (e.g. a GET without parameters)
        assert mode is GenerationMode.NEGATIVE, operation.label


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_generated_request_gives_a_server_error(
    fuzzed_server: Server, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    seen: Counter = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17
    for operation in operations:
        fuzz(operation, mode, fuzzed_server, seen)
    print(f"\n[fuzz] {mode.value}: {sum(seen.values())} requests, by status class {dict(seen)}")
    assert seen[5] == 0 and sum(seen.values()) > len(operations)
