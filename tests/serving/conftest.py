"""Fixtures of the service tests: in-process apps (FastAPI TestClient) over a real bundle.

The service tests run on the tiny bundle (seconds to build, the fast tier): the service's
behaviour does not depend on how accurate the model is. What needs the pipeline's own
bundle (int8, agreement with PyTorch) is tested in tests/stages/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.helpers.service import PHOTOS, settings_for, true_label, upload


@pytest.fixture(scope="session")
def bundle_dir(tiny_bundle_dir: Path) -> Path:
    """Service tests load the tiny bundle, not the pipeline's."""
    return tiny_bundle_dir


@pytest.fixture(scope="module")
def client(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    logs = tmp_path_factory.mktemp("serving-logs")
    with TestClient(create_app(settings_for(bundle_dir, logs))) as test_client:
        yield test_client


@pytest.fixture
def fresh_app_client(bundle_dir: Path, tmp_path: Path):
    """Factory for a client over an app with its own settings (closed after the test)."""
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        app = create_app(settings_for(bundle_dir, tmp_path, **overrides))
        test_client = TestClient(app)
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def correct_answers(client: TestClient) -> list[tuple[Path, dict]]:
    """Sampled photos the bundle labels correctly, with their answers, surest first."""
    answers = [(p, upload(client, p.read_bytes()).json()) for p in PHOTOS[:: len(PHOTOS) // 12]]
    correct = [(p, a) for p, a in answers if a["label"] == true_label(p)]
    assert correct, "the bundle labels none of the sampled photos correctly"
    return sorted(correct, key=lambda item: -item[1]["confidence"])


@pytest.fixture(scope="module")
def confident_photo(correct_answers: list[tuple[Path, dict]]) -> tuple[Path, dict]:
    return correct_answers[0]


@pytest.fixture(scope="module")
def uncertain_photo(correct_answers: list[tuple[Path, dict]]) -> tuple[Path, dict]:
    """The least sure correct answer: occluding parts of it visibly moves the prediction."""
    return correct_answers[-1]
