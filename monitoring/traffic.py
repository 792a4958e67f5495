"""Simulated traffic: real labelled photos sent to the service, their true labels posted back.

The folder holds either one subfolder per class (`cat/`, `Dog/`: the name, lower-cased, is
the label) or Kaggle-style flat files (`cat.12.jpg`: the label is the name before the
first dot). `simulate` returns what the client itself saw (sent, answered, correct), so
the monitoring report can be checked against it. Run it as `python -m monitoring
simulate --data FOLDER`.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class Photo:
    path: Path
    label: str


def collect_photos(folder: Path) -> list[Photo]:
    """Labelled photos in `folder`: class subfolders and/or flat `label.N.ext` files.

    Labels are lower-cased so `Cat/`, `CAT.1.jpg` and `cat.1.jpg` agree with the
    model's class names. Files whose label cannot be told are skipped.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"No such folder: {folder}")
    photos: list[Photo] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            label = entry.name.lower()
            photos += [
                Photo(p, label)
                for p in sorted(entry.rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            stem = entry.name.split(".")[0]
            if stem and entry.name.count(".") >= 2:  # label.N.ext
                photos.append(Photo(entry, stem.lower()))
    return photos


# Named covariate shifts (`--shift`): what a new camera, app or upload path might do.
SHIFTS = ("darken", "blur", "grayscale", "crop")
DARKEN_FACTOR = 0.3  # brightness multiplied by this
BLUR_RADIUS_SHARE = 0.02  # Gaussian blur radius as a share of the shorter side
CROP_SHARE = 0.35  # keep this share of each side, from a corner (the subject half gone)


def _named_shift(img: Image.Image, shift: str) -> Image.Image:
    if shift == "darken":
        return ImageEnhance.Brightness(img).enhance(DARKEN_FACTOR)
    if shift == "blur":
        return img.filter(ImageFilter.GaussianBlur(BLUR_RADIUS_SHARE * min(img.size)))
    if shift == "grayscale":
        return img.convert("L").convert("RGB")
    if shift == "crop":
        w, h = img.size
        return img.crop((0, 0, max(1, round(w * CROP_SHARE)), max(1, round(h * CROP_SHARE))))
    raise ValueError(f"unknown shift {shift!r}; one of {', '.join(SHIFTS)}")


def shift_image(
    data: bytes, grayscale: bool, darken: float | None, shifts: tuple[str, ...] = ()
) -> bytes:
    """Apply the simulated input shifts and re-encode as JPEG (quality 90)."""
    with Image.open(io.BytesIO(data)) as opened:
        img = ImageOps.exif_transpose(opened).convert("RGB")
    if grayscale:
        img = img.convert("L").convert("RGB")
    if darken is not None:
        img = ImageEnhance.Brightness(img).enhance(darken)
    for shift in shifts:
        img = _named_shift(img, shift)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def plan(photos: list[Photo], count: int | None, only_class: str | None, seed: int) -> list[Photo]:
    """The photos to send, in a shuffled order; cycles through them when `count` is larger."""
    if only_class:
        photos = [p for p in photos if p.label == only_class.lower()]
    if not photos:
        raise ValueError("No labelled photos to send (check --data and --only-class).")
    rng = random.Random(seed)
    order = photos[:]
    rng.shuffle(order)
    count = len(order) if count is None else count
    return [order[i % len(order)] for i in range(count)]


@dataclass
class Tally:
    """What the client itself saw, so the monitoring report can be checked against it."""

    sent: int = 0
    answered: int = 0
    errors: int = 0
    correct: int = 0
    feedback_sent: int = 0
    feedback_errors: int = 0
    by_true_label: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    accuracy_seen: float | None = None

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message)


def _pace(start: float, i: int, rate: float) -> None:
    """Sleep until request `i` is due at `rate` per second (0: no pause)."""
    if rate > 0:
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


RATE_LIMIT_RETRIES = 5


def _predict(
    client: httpx.Client, photo: Photo, data: bytes, tally: Tally
) -> tuple[str, str] | None:
    """Send one photo; the request id and feedback token of a 200 answer (None after an
    error, counted). A 429 (the service's per-client rate limit) is waited out, as a
    well-behaved client does."""
    tally.sent += 1
    tally.by_true_label[photo.label] = tally.by_true_label.get(photo.label, 0) + 1
    try:
        for _ in range(RATE_LIMIT_RETRIES):
            resp = client.post("/predict", files={"file": (photo.path.name, data, "image/jpeg")})
            if resp.status_code != 429:
                break
            time.sleep(float(resp.headers.get("retry-after", "1")))
    except httpx.HTTPError as exc:
        tally.error(f"{photo.path.name}: {exc!r}")
        return None
    if resp.status_code != 200:
        tally.error(f"{photo.path.name}: HTTP {resp.status_code} {resp.text[:200]}")
        return None
    body = resp.json()
    tally.answered += 1
    tally.correct += int(body.get("label") == photo.label)
    # The id and its feedback token: /feedback needs both (only the asker holds the token).
    if not body.get("request_id") or not body.get("feedback_token"):
        return None
    return body["request_id"], body["feedback_token"]


def _feedback(client: httpx.Client, asked: tuple[str, str], label: str, tally: Tally) -> None:
    request_id, token = asked
    try:
        body = {"request_id": request_id, "feedback_token": token, "label": label}
        fb = client.post("/feedback", json=body)
        ok = fb.status_code in (200, 201, 204)
    except httpx.HTTPError:
        ok = False
    if ok:
        tally.feedback_sent += 1
    else:
        tally.feedback_errors += 1


def simulate(args: argparse.Namespace) -> Tally:
    """Send the planned photos at `args.rate` per second; post feedback for a share of them."""
    photos = plan(collect_photos(args.data), args.count, args.only_class, args.seed)
    rng = random.Random(args.seed + 1)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    shifts = tuple(args.shift or ())
    shifted = args.grayscale or args.darken is not None or bool(shifts)
    tally = Tally()
    start = time.monotonic()
    with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=args.timeout) as cl:
        for i, photo in enumerate(photos):
            _pace(start, i, args.rate)
            data = photo.path.read_bytes()
            if shifted:
                data = shift_image(data, args.grayscale, args.darken, shifts)
            asked = _predict(cl, photo, data, tally)
            if asked and rng.random() < args.feedback_share:
                _feedback(cl, asked, photo.label, tally)
    tally.seconds = round(time.monotonic() - start, 3)
    tally.accuracy_seen = tally.correct / tally.answered if tally.answered else None
    return tally


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `simulate` subcommand's options."""
    ap = sub.add_parser("simulate", help="send labelled photos and post their true labels")
    ap.add_argument("--url", default=os.environ.get("SERVICE_URL", "http://127.0.0.1:8000"))
    ap.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a folder of labelled photos: class subfolders or label.N.jpg files "
        "(tests/data/fullres in this repository)",
    )
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second (0: no pause)")
    ap.add_argument("--count", type=int, default=None, help="requests (default: each photo once)")
    ap.add_argument(
        "--feedback-share",
        type=float,
        default=1.0,
        help="share of answered requests whose true label is posted (0 to 1)",
    )
    ap.add_argument("--only-class", default=None, help="shift: send only this class")
    ap.add_argument("--grayscale", action="store_true", help="shift: drop colour")
    ap.add_argument(
        "--darken", type=float, default=None, help="shift: brightness factor, e.g. 0.35"
    )
    ap.add_argument(
        "--shift", action="append", choices=SHIFTS, default=None,
        help=f"covariate shift, repeatable: darken (x{DARKEN_FACTOR}), blur (radius "
        f"{BLUR_RADIUS_SHARE * 100:.0f}%% of the shorter side), grayscale, crop (the "
        f"top-left {CROP_SHARE * 100:.0f}%% of each side)",
    )  # fmt: skip
    ap.add_argument("--api-key", default=os.environ.get("API_KEY"), help="[env API_KEY]")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0.0 <= args.feedback_share <= 1.0:
        ap.error("--feedback-share must be between 0 and 1")
    if args.darken is not None and args.darken <= 0:
        ap.error("--darken must be positive")
