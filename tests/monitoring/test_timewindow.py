"""Time bounds of a report window."""

from __future__ import annotations

from pathlib import Path

from monitoring.timewindow import parse_moment, parse_time
from tests.helpers.photos import FULLRES_DIR, SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[2]
FULLRES = FULLRES_DIR
CATS_DOGS = SAMPLE_DIR


def test_time_bounds_accept_iso_times_and_durations() -> None:
    now = parse_time("2026-11-26T12:00:00Z")
    assert parse_moment("90m", now) == parse_time("2026-11-26T10:30:00+00:00")
    assert parse_moment("1d", now).isoformat() == "2026-11-25T12:00:00+00:00"
    assert parse_moment("2026-11-26T11:00:00", now).hour == 11  # naive is UTC
