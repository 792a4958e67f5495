"""What the service tests share: real photos, hermetic settings, and request helpers."""

from __future__ import annotations

import json
import socket
import struct
import tempfile
import zlib
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from serving.settings import Settings
from tests.helpers.images import encode
from tests.helpers.photos import FULLRES_DIR, true_label
from tests.helpers.servers import Server, start_service

__all__ = [
    "FULLRES",
    "PHOTOS",
    "ROOT",
    "encode",
    "model_name",
    "png_with_size",
    "read_http_response",
    "settings_for",
    "start_server",
    "true_label",
    "upload",
]

ROOT = Path(__file__).resolve().parents[2]
FULLRES = FULLRES_DIR  # committed full-size photos, labels in their names (cat.N.jpg)
PHOTOS = sorted(FULLRES.glob("*.jpg"))


def start_server(bundle_dir: Path, workdir: Path, **env: str) -> Server:
    """A ready `python -m serving` (the shared harness) with its own store under `workdir`."""
    logs = Path(tempfile.mkdtemp(prefix="logs-", dir=workdir))
    defaults = {
        "API_KEY": "",
        "AUTH_DISABLED": "false" if env.get("API_KEY") else "true",
        "STORE_PATH": str(logs / "store.sqlite3"),
        "DATABASE_URL": "",
        "SHUTDOWN_GRACE_S": "20",
        "RATE_LIMIT": "off",  # as in settings_for; tests/serving/attacks set their own
    }
    return start_service(bundle_dir, workdir, **{**defaults, **env})


def read_http_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def settings_for(bundle_dir: Path, logs: Path, **overrides: object) -> Settings:
    """Hermetic settings (not from the environment) with the store in a temporary folder."""
    base: dict[str, object] = {
        "model_dir": bundle_dir,
        "store_path": logs / "store.sqlite3",
        "store_flush_ms": 20,
        "store_window_ttl_s": 0,
        "inference_threads": 2,
        "decode_threads": 2,
        # One app serves a whole module's tests from one client address: a rate limit would
        # answer 429 at random depending on how fast they run. The attack suite sets its own.
        "rate_limit": "off",
    }
    # No key unless a test gives one: authentication off on purpose (serving/auth_policy.py).
    base["auth_disabled"] = not overrides.get("api_key")
    return Settings.hermetic(**{**base, **overrides})


def upload(client: TestClient, data: bytes, name: str = "photo.jpg", ctype: str = "image/jpeg"):
    return client.post("/predict", files={"file": (name, data, ctype)})


def feedback_for(answer: dict, label: str) -> dict:
    """The /feedback body for an earlier answer: its id, its token and the true label."""
    return {"request_id": answer["request_id"], "feedback_token": answer["feedback_token"],
            "label": label}  # fmt: skip


def png_with_size(width: int, height: int, mode: str = "L") -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    data = bytearray(encode(Image.new(mode, (16, 16)), "PNG"))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


def model_name(bundle_dir: Path) -> str:
    return json.loads((bundle_dir / "model.json").read_text())["name"]
