"""After a release passed its smoke test, record it against the registry version it serves.

    python scripts/record_deployment.py MODEL_DIR IMAGE ENVIRONMENT

Tags the MLflow model version that models/registry.json names (deployed_image,
deployed_to, deployed_at) when MLFLOW_TRACKING_URI is set; prints a GitHub notice and
exits 0 otherwise, or when the bundle was never promoted (no record, or a record of
another bundle). scripts/rollback.py reads these tags to find the previous champion's
image (docs/lifecycle.md).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.registry import record_for_bundle  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    model_dir, image, environment = Path(argv[0]), argv[1], argv[2]
    record = record_for_bundle(model_dir)
    if record is None:
        print(
            f"::notice::The bundle in {model_dir} was never promoted (no registry.json names "
            "it): no registry version to record."
        )
        return 0
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        print(
            f"::notice::No tracking server (MLFLOW_TRACKING_URI): {image} deployed to "
            f"{environment} serves {record.name} v{record.version}; not recorded in MLflow."
        )
        return 0
    import mlflow

    client = mlflow.MlflowClient(uri)
    tags = {
        "deployed_image": image,
        "deployed_to": environment,
        "deployed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for key, value in tags.items():
        client.set_model_version_tag(record.name, record.version, key, value)
    print(f"recorded: {record.name} v{record.version} runs {image} in {environment}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
