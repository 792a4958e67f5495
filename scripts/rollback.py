"""One command back to the previous champion: its image and the registry alias, recorded.

    python scripts/rollback.py OVERLAY [--no-rollout]

Finds the champion (alias `champion`) in the registry at MLFLOW_TRACKING_URI, and the
newest earlier version that was deployed (scripts/record_deployment.py tagged it with
`deployed_image`); releases that image with deployment/kubernetes/rollout.sh OVERLAY
(smoke test included; --no-rollout skips it), moves the alias back, writes
models/registry.json and appends a `rollback` row to docs/promotions.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.registry import CHAMPION_ALIAS, REGISTERED_MODEL  # noqa: E402


def previous(client, current: int):
    """The newest version before `current` that was deployed (has a deployed_image tag)."""
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    earlier = [v for v in versions if int(v.version) < current and v.tags.get("deployed_image")]
    if not earlier:
        raise SystemExit(f"no deployed version of {REGISTERED_MODEL} before v{current}")
    return max(earlier, key=lambda v: int(v.version))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("overlay")
    parser.add_argument("--no-rollout", action="store_true")
    args = parser.parse_args(argv)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SystemExit("set MLFLOW_TRACKING_URI: the registry says which model came before")
    import mlflow

    from contracts.registry import RegistryRecord
    from stages.registry import append_audit, who

    client = mlflow.MlflowClient()
    current = client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS)
    back = previous(client, int(current.version))
    image = back.tags["deployed_image"]
    if not args.no_rollout:
        subprocess.run(
            ["deployment/kubernetes/rollout.sh", args.overlay, image], cwd=ROOT, check=True
        )
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, back.version)
    record = RegistryRecord(
        version=back.version,
        bundle_version=back.tags.get("bundle_version", "unknown"),
        data_version=back.tags.get("data_version"),
        git_revision=back.tags.get("git_revision"),
        run_id=back.run_id,
        promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        promoted_by=who(),
        reason=f"rollback from v{current.version} to v{back.version} ({image})",
    )
    record.write(ROOT / "models")
    append_audit(ROOT / "docs" / "promotions.md", "rollback", record)
    print(f"rolled back: {REGISTERED_MODEL} v{current.version} -> v{back.version}, {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
