"""Triton's own HTTP client (`tritonclient[http]`, from PyPI) against the real service.

The service runs as `python -m serving` on 127.0.0.1 over the pipeline's bundle, and the
client is used as a new user would: health, metadata, and inference with JSON and with
binary tensors, whose probabilities must be those `/predict` gives for the same photos.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from contracts import imaging
from tests.helpers.servers import Server, running
from tests.helpers.service import PHOTOS, start_server

pytestmark = pytest.mark.slow

MAX_IMAGES = 4
MAX_BODY = 16 * 1024 * 1024  # three photos as JSON floats: 2.8 MB at 128 px, 9 MB at 224


@pytest.fixture(scope="module")
def server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("triton-client")
    limits = {"MAX_BATCH_FILES": str(MAX_IMAGES), "MAX_REQUEST_BYTES": str(MAX_BODY)}
    with running(start_server(bundle_dir, workdir, **limits)) as started:
        yield started


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield triton_client
    triton_client.close()


@pytest.fixture(scope="module")
def manifest(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "model.json").read_text())


@pytest.fixture(scope="module")
def photos_and_answers(server: Server) -> tuple[list[Path], list[dict]]:
    """Three photos and what `/predict` (a multipart upload) answers for each."""
    photos = PHOTOS[1:4]
    answers = []
    for photo in photos:
        files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")}
        response = httpx.post(f"{server.url}/predict", files=files, timeout=30)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return photos, answers


def pixels(photos: list[Path], size: int) -> np.ndarray:
    """The client's own decoding: the image contract, as the service decodes uploads."""
    return imaging.to_batch([imaging.load(p.read_bytes(), size) for p in photos])


def image_input(array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("image", list(array.shape), datatype)
    return tensor.set_data_from_numpy(array, binary_data=binary)


def test_health_and_metadata(client: triton.InferenceServerClient, manifest: dict) -> None:
    name, size = manifest["name"], manifest["input"]["size"]
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready(name) and not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata(name)
    assert manifest["version"] in meta["versions"]
    assert {"name": "image", "datatype": "FP32", "shape": [-1, 3, size, size]} in meta["inputs"]
    assert {o["name"] for o in meta["outputs"]} == {"probabilities", "label"}
    assert meta["parameters"]["classes"] == manifest["classes"]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_infer_gives_the_probabilities_of_predict(
    client: triton.InferenceServerClient,
    manifest: dict,
    photos_and_answers: tuple[list[Path], list[dict]],
    datatype: str,
    binary: bool,
) -> None:
    """A batch of three photos: FP32 decoded by the client, or the JPEG files as BYTES
    (base64 text in JSON, raw bytes in binary)."""
    photos, answers = photos_and_answers
    if datatype == "FP32":
        array = pixels(photos, manifest["input"]["size"])
    else:
        files = [p.read_bytes() for p in photos]
        array = np.array(
            files if binary else [base64.b64encode(f).decode() for f in files], dtype=np.object_
        )
    outputs = [
        triton.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "label")
    ]
    result = client.infer(
        manifest["name"], [image_input(array, datatype, binary)], outputs=outputs, request_id="r-7"
    )
    response = result.get_response()
    assert (response["id"], response["model_version"]) == ("r-7", manifest["version"])
    sent_binary = {
        o["name"]: "binary_data_size" in o.get("parameters", {}) for o in response["outputs"]
    }
    assert sent_binary == {"probabilities": binary, "label": binary}
    expected = np.array([[a["probabilities"][c] for c in manifest["classes"]] for a in answers])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=2e-6)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == [a["label"] for a in answers]


def test_outputs_default_to_binary_and_can_be_chosen(
    client: triton.InferenceServerClient, manifest: dict, photos_and_answers
) -> None:
    photos, answers = photos_and_answers
    array = pixels(photos[:1], manifest["input"]["size"])
    everything = client.infer(manifest["name"], [image_input(array, "FP32", True)])
    assert all("binary_data_size" in o["parameters"] for o in everything.get_response()["outputs"])
    assert everything.as_numpy("probabilities").shape == (1, len(manifest["classes"]))
    only_label = client.infer(
        manifest["name"],
        [image_input(array, "FP32", True)],
        outputs=[triton.InferRequestedOutput("label", binary_data=False)],
    )
    assert only_label.as_numpy("probabilities") is None
    assert list(only_label.as_numpy("label")) == [answers[0]["label"]]


def test_versioned_infer_path(client: triton.InferenceServerClient, manifest: dict) -> None:
    array = pixels(PHOTOS[:1], manifest["input"]["size"])
    inputs = [image_input(array, "FP32", True)]
    named = client.infer(manifest["name"], inputs, model_version=manifest["version"])
    assert named.as_numpy("probabilities").shape == (1, len(manifest["classes"]))
    with pytest.raises(InferenceServerException) as error:
        client.infer(manifest["name"], inputs, model_version="0")
    assert error.value.status() == "404"


def refusal(client: triton.InferenceServerClient, model: str, array: np.ndarray, datatype: str,
            binary: bool = True) -> InferenceServerException:  # fmt: skip
    with pytest.raises(InferenceServerException) as error:
        client.infer(model, [image_input(array, datatype, binary)])
    return error.value


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_refusals_reach_the_client_as_exceptions(
    client: triton.InferenceServerClient, manifest: dict, binary: bool
) -> None:
    name, size = manifest["name"], manifest["input"]["size"]
    good = np.zeros((1, 3, size, size), np.float32)
    cases = {
        "unknown model": (refusal(client, "no-such-model", good, "FP32", binary), "404"),
        "wrong shape": (
            refusal(client, name, np.zeros((1, 3, size + 1, size + 1), np.float32), "FP32", binary),
            "400",
        ),
        "wrong dtype": (refusal(client, name, good.astype(np.float64), "FP64", binary), "400"),
        "a value out of range": (refusal(client, name, good + 2.0, "FP32", binary), "400"),
        "too many images": (
            refusal(client, name, np.zeros((MAX_IMAGES + 1, 3, size, size), np.float32),
                    "FP32", binary),
            "413",
        ),
    }  # fmt: skip
    for case, (error, status) in cases.items():
        assert error.status() == status, f"{case}: {error}"
        assert error.message(), case
    assert client.is_server_ready()


def test_a_body_over_the_cap_is_refused_before_it_is_read(
    client: triton.InferenceServerClient, manifest: dict
) -> None:
    size = manifest["input"]["size"]
    images = MAX_BODY // (3 * size * size * 4) + 1  # one more than fits in MAX_REQUEST_BYTES
    error = refusal(client, manifest["name"], np.zeros((images, 3, size, size), np.float32), "FP32")
    assert error.status() == "413" and "request body" in error.message()
    assert client.is_server_ready()
