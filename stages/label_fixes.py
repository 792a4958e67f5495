"""Labels a person has reviewed: the corrections prepare applies before splitting.

Two small versioned files, both read here and checked before any photo is touched:
- the fixes file (`paths.label_fixes`, data/label_fixes.csv): one row per photo a person
  looked at: file (relative to the raw folder), the label it is filed under, the
  corrected label or "drop", and why;
- the drop-hash file (`paths.drop_hashes`, data/drop_hashes.csv): content hashes (sha256
  of the file's bytes) of known non-photos such as the "photo unavailable" placeholder,
  dropped wherever they appear, under any name.
A malformed file stops the stage with the file, line and reason. A fixes row whose photo
is not in the raw folder (another range of the public photos) is reported, not fatal:
prepare.json counts it and the stage prints its name.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

DROP = "drop"
FIX_COLUMNS = ("file", "given_label", "corrected_label", "reason")
HASH_COLUMNS = ("sha256", "example_file", "reason")
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LabelFix:
    file: str
    given_label: str
    corrected_label: str  # a class name, or DROP
    reason: str


@dataclass(frozen=True)
class Corrections:
    """The reviewed fixes by file, and the dropped content hashes with their reasons."""

    fixes: dict[str, LabelFix] = field(default_factory=dict)
    drop_hashes: dict[str, str] = field(default_factory=dict)

    def decide(self, file: str, label: str, sha256: str) -> tuple[str | None, str]:
        """(label to keep, or None to drop; what decided it: "", "fix" or "hash")."""
        if sha256 in self.drop_hashes:
            return None, "hash"
        fix = self.fixes.get(file)
        if fix is None:
            return label, ""
        if fix.given_label != label:
            raise SystemExit(
                f"label fixes: {file} is filed under {label!r} but its row says "
                f"{fix.given_label!r}: the row was reviewed against other data"
            )
        return (None if fix.corrected_label == DROP else fix.corrected_label), "fix"


def read_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a CSV whose header must be exactly `columns`."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != columns:
            raise SystemExit(f"{path}:1: the header must be {','.join(columns)}, got {header}")
        rows = []
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise SystemExit(f"{path}:{line}: {len(row)} fields, expected {len(columns)}")
            values = dict(zip(columns, (cell.strip() for cell in row), strict=True))
            if not all(values.values()):
                raise SystemExit(f"{path}:{line}: every field is required, got {values}")
            rows.append((line, values))
        return rows


def read_fixes(path: Path, classes: list[str]) -> dict[str, LabelFix]:
    """The fixes file, checked: known labels, a real change, one row per file."""
    fixes: dict[str, LabelFix] = {}
    for line, row in read_rows(path, FIX_COLUMNS):
        fix = LabelFix(
            row["file"], row["given_label"].lower(), row["corrected_label"].lower(), row["reason"]
        )
        if fix.given_label not in classes:
            raise SystemExit(f"{path}:{line}: given_label {fix.given_label!r} is not in {classes}")
        if fix.corrected_label not in [*classes, DROP]:
            raise SystemExit(
                f"{path}:{line}: corrected_label {fix.corrected_label!r} must be one of "
                f"{classes} or {DROP!r}"
            )
        if fix.corrected_label == fix.given_label:
            raise SystemExit(f"{path}:{line}: corrected_label equals given_label: not a fix")
        if fix.file in fixes:
            raise SystemExit(f"{path}:{line}: {fix.file} has a second row")
        fixes[fix.file] = fix
    return fixes


def read_drop_hashes(path: Path) -> dict[str, str]:
    """sha256 -> reason, from the drop-hash file."""
    hashes: dict[str, str] = {}
    for line, row in read_rows(path, HASH_COLUMNS):
        digest = row["sha256"].lower()
        if not SHA256.fullmatch(digest):
            raise SystemExit(f"{path}:{line}: {row['sha256']!r} is not a sha256 (64 hex digits)")
        hashes[digest] = row["reason"]
    return hashes


def load_corrections(fixes: Path | None, hashes: Path | None, classes: list[str]) -> Corrections:
    """Both files, where configured; a configured file that is missing is an error."""
    for path in (fixes, hashes):
        if path is not None and not path.is_file():
            raise SystemExit(f"{path} not found: create it (header only for none) or unset it")
    return Corrections(
        read_fixes(fixes, classes) if fixes else {},
        read_drop_hashes(hashes) if hashes else {},
    )


@dataclass
class Applied:
    """What the corrections did, per split (the split each photo's hash gives it)."""

    relabelled: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    dropped_by_hash: Counter = field(default_factory=Counter)
    not_found: list[str] = field(default_factory=list)

    def report(self, splits: tuple[str, ...]) -> dict:
        per_split = {
            name: {s: int(counter[s]) for s in splits}
            for name, counter in (
                ("relabelled", self.relabelled),
                ("dropped", self.dropped),
                ("dropped_by_hash", self.dropped_by_hash),
            )
        }
        return {**per_split, "rows_not_found": len(self.not_found)}
