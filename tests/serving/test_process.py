"""The service as a pod runs it: a real uvicorn process on 127.0.0.1, and its web page
in headless Chromium.

Each server gets a free port and is stopped by its PID. The SIGTERM test keeps a request
in flight (its upload half sent) while the signal arrives, then checks that it is
answered and that the process exits cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.servers import Server
from tests.helpers.service import PHOTOS, read_http_response, start_server

pytestmark = pytest.mark.slow


def multipart(photo: Path, boundary: str = "testboundary0123") -> tuple[bytes, str]:
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{photo.name}"'
            f"\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def wait_until_in_flight(server: Server, count: int, timeout: float = 30.0) -> None:
    """Poll /metrics until `count` requests besides the scrape itself are in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{server.url}/metrics").text
        if f"http_requests_in_flight {count + 1:.1f}" in metrics:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} request(s) never showed as in flight")


def refuses_connections(port: int, timeout: float = 10.0) -> bool:
    """True once the listener is closed (draining: no new connections)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_finishes_the_request_in_flight_then_exits(
    bundle_dir: Path, tmp_path: Path
) -> None:
    server = start_server(bundle_dir, tmp_path)
    try:
        photo = next(p for p in PHOTOS if p.name.startswith("dog"))
        first = httpx.post(
            f"{server.url}/predict", files={"file": (photo.name, photo.read_bytes())}
        )
        assert first.status_code == 200, first.text

        body, content_type = multipart(photo)
        half = len(body) // 2
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(
            (
                f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: in-flight-1\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body[:half]
        )
        wait_until_in_flight(server, 1)  # the app is handling it, half the upload read
        os.kill(server.process.pid, signal.SIGTERM)
        assert refuses_connections(server.port), "still accepting new connections"
        assert server.process.poll() is None, "exited with a request still in flight"

        sock.sendall(body[half:])
        status, headers, payload = read_http_response(sock)
        sock.close()
        assert status == 200, payload
        answer = json.loads(payload)
        assert answer["request_id"] == headers["x-request-id"]
        assert headers["x-correlation-id"] == "in-flight-1"
        assert answer["label"] in ("cat", "dog")
        assert server.process.wait(timeout=30) == 0
    finally:
        server.stop()

    lines = server.log_lines()
    assert any(line.get("event") == "drain" for line in lines), "no 'draining' log line"
    request_lines = [line for line in lines if line.get("event") == "request"]
    in_flight = [line for line in request_lines if line.get("correlation_id") == "in-flight-1"]
    assert len(in_flight) == 1
    line = in_flight[0]
    assert line["request_id"] == answer["request_id"]
    assert line["method"] == "POST" and line["route"] == "/predict" and line["status"] == 200
    assert line["latency_ms"] > 0 and line["label"] == answer["label"]
    assert line["confidence"] == answer["confidence"]
    assert len(line["image"]["sha256"]) == 64 and line["image"]["width"] > 0
    text = server.log_path.read_text()
    assert photo.read_bytes()[:64].hex() not in text  # no image bytes in the log


@pytest.fixture(scope="module")
def live_server(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(bundle_dir, tmp_path_factory.mktemp("live-server"))
    yield server
    assert server.stop() == 0


def test_live_server_predicts_and_serves_docs(live_server: Server) -> None:
    photo = PHOTOS[0]
    response = httpx.post(
        f"{live_server.url}/predict", content=photo.read_bytes(),
        headers={"content-type": "image/jpeg"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.json()["label"] in ("cat", "dog")
    assert httpx.get(f"{live_server.url}/docs").status_code == 200
    metrics = httpx.get(f"{live_server.url}/metrics").text
    assert 'http_requests_total{method="POST",route="/predict",status="200"}' in metrics


def chromium_paths() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_web_page_shows_the_label_in_headless_chromium(live_server: Server) -> None:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    paths = chromium_paths()
    if paths is None:
        pytest.skip("chromium and chromedriver are not installed (.ci/apt-packages.txt)")
    browser, driver_path = paths
    photo = next(p for p in PHOTOS if p.name.startswith("cat"))
    expected = httpx.post(
        f"{live_server.url}/predict", files={"file": (photo.name, photo.read_bytes())}
    ).json()

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=driver_path))
    try:
        driver.get(f"{live_server.url}/")
        assert "Cat or dog" in driver.title
        driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "label").text.strip())
        assert driver.find_element(By.ID, "label").text == expected["label"]
        bars = driver.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert sorted(b.get_attribute("data-label") for b in bars) == ["cat", "dog"]
        heatmap = driver.find_element(By.ID, "heatmap")
        assert heatmap.get_attribute("src").startswith("data:image/png;base64,")
        loaded = driver.execute_script(
            "const img = arguments[0]; return img.complete && img.naturalWidth;", heatmap
        )
        assert loaded and loaded > 0
        assert driver.find_element(By.ID, "status").text == ""
    finally:
        driver.quit()
