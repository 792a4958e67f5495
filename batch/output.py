"""The batch output: CSV, JSON lines or Parquet, one row per file, written as chunks finish.

Resumable: rows are appended and flushed chunk by chunk, so a stopped run leaves every
finished row on disk; a rerun reads the `file` column back and skips those files. A
half-written last line (the process killed mid-write) is cut off first. Parquet cannot be
appended to, so its rows go to a JSON-lines journal beside it (`<out>.partial.jsonl`) and
the Parquet file is written from the journal when the run ends.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from batch.scoring import Row

FORMATS = ("csv", "jsonl", "parquet")


def format_of(path: Path, given: str | None) -> str:
    fmt = given or {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix)
    if fmt not in FORMATS:
        raise ValueError(
            f"cannot tell the output format of {path}: pass --format csv|jsonl|parquet"
        )
    return fmt


def columns(classes: list[str]) -> list[str]:
    return ["file", "label", "confidence", *(f"p_{c}" for c in classes), "ood_score",
            "ood_flag", "model_version", "error", "detail"]  # fmt: skip


def flat(row: Row, classes: list[str]) -> dict[str, Any]:
    """The row as one flat record (a probability column per class)."""
    return {
        "file": row.file, "label": row.label, "confidence": row.confidence,
        **{f"p_{c}": row.probabilities.get(c) for c in classes},
        "ood_score": row.ood_score, "ood_flag": row.ood_flag,
        "model_version": row.model_version, "error": row.error, "detail": row.detail,
    }  # fmt: skip


def _cut_partial_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


class Writer:
    """Appends rows to the output (or the Parquet journal) and knows what is done."""

    def __init__(self, out: Path, fmt: str, classes: list[str]) -> None:
        self.out, self.fmt, self.classes = out, fmt, classes
        self.journal = out.with_name(out.name + ".partial.jsonl") if fmt == "parquet" else out
        self.columns = columns(classes)

    def done(self) -> set[str]:
        """Files already written by an earlier run (empty for a new output)."""
        if self.fmt == "parquet" and self.out.is_file() and not self.journal.is_file():
            self._reopen_parquet()
        if not self.journal.is_file():
            return set()
        _cut_partial_line(self.journal)
        with self.journal.open(encoding="utf-8", newline="") as fh:
            if self.fmt == "csv":
                return {r["file"] for r in csv.DictReader(fh)}
            return {json.loads(line)["file"] for line in fh if line.strip()}

    def append(self, rows: list[Row]) -> None:
        """Write and flush the rows (a chunk is on disk before the next starts)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        new = not self.journal.is_file() or self.journal.stat().st_size == 0
        with self.journal.open("a", encoding="utf-8", newline="") as fh:
            if self.fmt == "csv":
                writer = csv.DictWriter(fh, self.columns)
                if new:
                    writer.writeheader()
                writer.writerows(flat(r, self.classes) for r in rows)
            else:
                fh.writelines(json.dumps(flat(r, self.classes)) + "\n" for r in rows)

    def _reopen_parquet(self) -> None:
        """A finished Parquet file back into the journal, so a rerun adds to it."""
        import pyarrow.parquet as pq

        records = pq.read_table(self.out).to_pylist()
        with self.journal.open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)

    def finish(self) -> None:
        """Parquet: the journal's rows as one Parquet file (then the journal is removed)."""
        if self.fmt != "parquet":
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        lines = (
            self.journal.read_text(encoding="utf-8").splitlines() if self.journal.is_file() else []
        )
        records = [json.loads(line) for line in lines if line.strip()]
        schema = pa.schema([(c, _arrow_type(c)) for c in self.columns])
        table = pa.Table.from_pylist(records, schema=schema)
        pq.write_table(table, self.out)
        self.journal.unlink(missing_ok=True)


def _arrow_type(column: str):
    import pyarrow as pa

    if column == "confidence" or column == "ood_score" or column.startswith("p_"):
        return pa.float64()
    return pa.bool_() if column == "ood_flag" else pa.string()
