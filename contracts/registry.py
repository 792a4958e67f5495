"""Which registered model a bundle is: the record the promotion gate leaves beside it.

The bundle (`models/export/`) is a pipeline output whose bytes depend only on its inputs,
so promotion never edits it. When the gate accepts a bundle it writes this record as
`registry.json`; the image build copies it into the model directory, and the service
shows it (`/model-info`, the Prometheus info metric). A bundle without one was never
promoted: the service still serves it and says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

REGISTRY_FILE = "registry.json"
REGISTERED_MODEL = "cats-dogs-classifier"
CHAMPION_ALIAS = "champion"


class RegistryError(RuntimeError):
    """The registry record exists but cannot be read."""


class RegistryRecord(BaseModel):
    """One promoted model: where it sits in the MLflow registry and what it was made from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = REGISTERED_MODEL
    version: str = Field(min_length=1)  # the MLflow registry version, e.g. "3"
    alias: str | None = CHAMPION_ALIAS
    bundle_version: str = Field(min_length=1)  # model.json's version (ONNX hash)
    data_version: str | None = None  # data/raw.dvc md5
    git_revision: str | None = None
    run_id: str | None = None  # the MLflow run that trained it
    promoted_at: str  # ISO 8601, UTC
    promoted_by: str
    reason: str

    def write(self, model_dir: Path) -> Path:
        path = Path(model_dir) / REGISTRY_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, model_dir: Path) -> RegistryRecord | None:
        """The record in `model_dir`, or None when the bundle was never promoted."""
        path = Path(model_dir) / REGISTRY_FILE
        if not path.is_file():
            return None
        try:
            return cls.model_validate_json(path.read_text())
        except (ValidationError, ValueError) as error:
            raise RegistryError(f"{path} is not a valid registry record: {error}") from error


def record_for_bundle(model_dir: Path) -> RegistryRecord | None:
    """The record that names the bundle in `model_dir` (model.json's version), beside it (as
    in the image) or one folder up (models/registry.json in a checkout); None when none
    does: a record of another bundle must not be taken for this one's."""
    model_dir = Path(model_dir)
    version = json.loads((model_dir / "model.json").read_text())["version"]
    for folder in (model_dir, model_dir.parent):
        record = RegistryRecord.read(folder)
        if record is not None and record.bundle_version == version:
            return record
    return None


OVERRIDE_PREFIX = "override by a person"


def overridden(model_dir: Path) -> str:
    """The override reason when this bundle was promoted although the gate refused it
    (`stages.promote --override`), else "": CI lets such a bundle pass, and says why."""
    record = record_for_bundle(model_dir)
    return record.reason if record and record.reason.startswith(OVERRIDE_PREFIX) else ""
