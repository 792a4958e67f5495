"""Which registered model the pod serves: the promotion record beside its bundle.

The gate (stages/promote) leaves `registry.json` beside a promoted bundle
(contracts/registry.py). The service reads it once at start and shows it on
`/model-info` and in the `model_info` metric; a bundle without one was never promoted and
still serves. A record that cannot be read, or that names another bundle, is not
trusted: the pod says "not promoted" and why, instead of claiming a version it is not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from contracts.registry import RegistryError, RegistryRecord

log = logging.getLogger("serving.lineage")


@dataclass(frozen=True)
class Lineage:
    """The loaded bundle's promotion record, or why there is none to show."""

    record: RegistryRecord | None = None
    error: str | None = None  # a record is present but not trusted

    @property
    def promoted(self) -> bool:
        return self.record is not None

    def labels(self) -> dict[str, str]:
        """The registry labels of the `model_info` metric ("" where unknown)."""
        r = self.record
        return {
            "promoted": "true" if r else "false",
            "registry_name": r.name if r else "",
            "registry_version": r.version if r else "",
            "alias": (r.alias or "") if r else "",
        }


def read_lineage(model_dir: Path, bundle_version: str) -> Lineage:
    """The record beside the bundle (as the image places it), checked against the bundle it
    claims to describe; in a checkout, `models/registry.json` one folder up when it names
    this bundle (a record there of another model is simply not this one's)."""
    try:
        record = RegistryRecord.read(model_dir)
        if record is None:
            above = RegistryRecord.read(Path(model_dir).parent)
            record = above if above and above.bundle_version == bundle_version else None
    except RegistryError as exc:
        log.error("%s", exc, extra={"fields": {"event": "registry"}})
        return Lineage(error=str(exc))
    if record is None:
        return Lineage()
    if record.bundle_version != bundle_version:
        error = (
            f"registry.json names bundle {record.bundle_version}, but the loaded bundle is "
            f"{bundle_version}: the record belongs to another model and is ignored."
        )
        log.error(error, extra={"fields": {"event": "registry"}})
        return Lineage(error=error)
    return Lineage(record=record)
