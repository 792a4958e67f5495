"""Post-deployment smoke test of the cats-dogs service (standard library only).

    python scripts/smoke_test.py http://127.0.0.1:8000 --image cat.jpg --label cat

Checks, in order: live, ready, model info, one real photo predicted with the expected
label, a wrong feedback token refused with 404, one bad input answered 4xx, and the prediction counter present in /metrics. With
--expect-version, the model info and the prediction must name that model version (the
bundle's `model.json` version), so a release is proven to serve the model it shipped.
Every check runs; each prints PASS or FAIL with the reason, and the exit status is 1
when any failed (the last line names them), 2 on bad arguments. CI runs it against a
local server (tests/test_deployment.py) and CD against the cluster's Service.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def lineage(info: dict) -> str:
    """Which registry version the pod says it serves ("not promoted" without a record)."""
    registry = info.get("registry")
    if not registry:
        return "not promoted"
    alias = f" ({registry['alias']})" if registry.get("alias") else ""
    return f"registry {registry['name']} v{registry['version']}{alias}"


class CheckFailed(Exception):
    """A check's failure; the message says what was expected and what came back."""


class Client:
    def __init__(self, base_url: str, timeout: float, api_key: str | None) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"X-API-Key": api_key} if api_key else {}

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request; HTTP errors are answers, not exceptions."""
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CheckFailed(f"{method} {path}: no answer ({reason})") from exc

    def upload(self, path: str, filename: str, data: bytes, mime: str) -> tuple[int, bytes]:
        """POST one file as multipart/form-data field `file`."""
        boundary = uuid.uuid4().hex
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {mime}\r\n\r\n"
        )
        body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", path, body, f"multipart/form-data; boundary={boundary}")


def expect_status(method: str, path: str, status: int, body: bytes, wanted: int) -> None:
    if status != wanted:
        raise CheckFailed(f"{method} {path}: HTTP {status}, expected {wanted}: {snippet(body)}")


def snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def as_json(path: str, body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise CheckFailed(f"{path}: answer is not JSON: {snippet(body)}") from exc
    if not isinstance(value, dict):
        raise CheckFailed(f"{path}: answer is not a JSON object: {snippet(body)}")
    return value


@dataclass
class Checks:
    """Each check a deployment must pass; a method returns what it saw or raises CheckFailed."""

    client: Client
    image: Path
    label: str
    wait_s: float
    version: str | None = None
    answer: dict = field(default_factory=dict)  # the /predict answer, for the feedback check

    def wait_for_200(self, path: str) -> str:
        # Retries for up to wait_s: a fresh rollout or port-forward may not answer yet.
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                status, body = self.client.request("GET", path)
            except CheckFailed:
                if time.monotonic() >= deadline:
                    raise
            else:
                if status == 200 or time.monotonic() >= deadline:
                    expect_status("GET", path, status, body, 200)
                    return "HTTP 200"
            time.sleep(1.0)

    def live(self) -> str:
        return self.wait_for_200("/health/live")

    def ready(self) -> str:
        return self.wait_for_200("/health/ready")

    def model_info(self) -> str:
        status, body = self.client.request("GET", "/model-info")
        expect_status("GET", "/model-info", status, body, 200)
        info = as_json("/model-info", body)
        missing = [k for k in ("name", "version", "classes") if k not in info]
        if missing:
            raise CheckFailed(f"/model-info lacks {', '.join(missing)}: {snippet(body)}")
        if self.label not in info["classes"]:
            raise CheckFailed(
                f"/model-info classes {info['classes']} do not include {self.label!r}"
            )
        if self.version is not None and info["version"] != self.version:
            raise CheckFailed(f"/model-info version {info['version']!r}, expected {self.version!r}")
        if info.get("registry_error"):  # a registry.json shipped that does not fit the bundle
            raise CheckFailed(f"/model-info registry_error: {info['registry_error']}")
        return f"{info['name']} {info['version']}, classes {info['classes']}, {lineage(info)}"

    def predict(self) -> str:
        name = self.image.name
        status, body = self.client.upload("/predict", name, self.image.read_bytes(), "image/jpeg")
        expect_status("POST", "/predict", status, body, 200)
        answer = self.answer = as_json("/predict", body)
        got, served = answer.get("label"), answer.get("model_version")
        if got != self.label:
            raise CheckFailed(
                f"{name}: predicted {got!r} (confidence {answer.get('confidence')}), "
                f"expected {self.label!r}"
            )
        if self.version is not None and served != self.version:
            raise CheckFailed(f"/predict answered with model {served!r}, expected {self.version!r}")
        return f"{name} -> {got} ({answer.get('confidence')}, model {served})"

    def feedback_token(self) -> str:
        """A wrong feedback token is refused like an unknown id (nothing is stored)."""
        rid, token = self.answer.get("request_id"), self.answer.get("feedback_token")
        if not rid or not token:
            raise CheckFailed("/predict answered no request_id and feedback_token")
        wrong = json.dumps({"request_id": rid, "feedback_token": "0" * 64, "label": "cat"})
        status, body = self.client.request("POST", "/feedback", wrong.encode(), "application/json")
        expect_status("POST", "/feedback with a wrong token", status, body, 404)
        return "a wrong token is refused (404)"

    def bad_input(self) -> str:
        status, body = self.client.upload(
            "/predict", "notes.jpg", b"this is not a photo", "image/jpeg"
        )
        if not 400 <= status < 500:
            raise CheckFailed(f"POST /predict with a non-image: HTTP {status}, expected 4xx")
        return f"non-image answered HTTP {status}: {snippet(body, 120)}"

    def metrics(self) -> str:
        status, body = self.client.request("GET", "/metrics")
        expect_status("GET", "/metrics", status, body, 200)
        text = body.decode("utf-8", "replace")
        samples = [line for line in text.splitlines() if line.startswith("predictions_total{")]
        if not samples:
            raise CheckFailed("/metrics has no predictions_total sample")
        return "; ".join(samples)

    def in_order(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("live", self.live),
            ("ready", self.ready),
            ("model-info", self.model_info),
            ("predict", self.predict),
            ("feedback-token", self.feedback_token),
            ("bad-input", self.bad_input),
            ("metrics", self.metrics),
        ]


def run_checks(
    client: Client, image: Path, label: str, wait_s: float, version: str | None = None
) -> list[str]:
    """Run every check, print one line each, and return the names of those that failed."""
    failed = []
    for name, check in Checks(client, image, label, wait_s, version).in_order():
        try:
            detail = check()
        except CheckFailed as exc:
            failed.append(name)
            print(f"FAIL {name}: {exc}", flush=True)
        else:
            print(f"PASS {name}: {detail}", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--image", type=Path, required=True, help="a real JPEG photograph")
    parser.add_argument("--label", required=True, help="the class the photo shows, e.g. cat")
    parser.add_argument("--api-key", default=None, help="sent as X-API-Key when set")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for ready")
    parser.add_argument(
        "--expect-version", default=None, help="the model version the service must serve"
    )
    args = parser.parse_args(argv)
    if not args.image.is_file():
        parser.error(f"no such photo: {args.image}")

    print(f"Smoke test of {args.base_url}", flush=True)
    client = Client(args.base_url, args.timeout, args.api_key)
    failed = run_checks(client, args.image, args.label, args.wait, args.expect_version)
    if failed:
        print(f"SMOKE TEST FAILED: {', '.join(failed)}", flush=True)
        return 1
    print("SMOKE TEST PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
