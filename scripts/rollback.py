"""One command back to the previous champion: its image and the registry alias, recorded.

    python scripts/rollback.py OVERLAY [--no-rollout] [--root DIR]

Finds the champion (alias `champion`) in the registry at MLFLOW_TRACKING_URI, and the
newest earlier version that was deployed (scripts/record_deployment.py tagged it with
`deployed_image`); releases that image with deployment/kubernetes/rollout.sh OVERLAY
(smoke test included, expecting the bundle version the registry recorded; --no-rollout
skips it), moves the alias back, writes models/registry.json and appends a `rollback` row
to docs/promotions.md. When the rollout fails, the alias, registry.json and the audit
trail stay as they were and the exit status is 1.
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

from contracts.registry import CHAMPION_ALIAS, REGISTERED_MODEL, RegistryRecord  # noqa: E402


def previous(client, current: int):
    """The newest version before `current` that was deployed (has a deployed_image tag)."""
    versions = client.search_model_versions(f"name='{REGISTERED_MODEL}'")
    earlier = [v for v in versions if int(v.version) < current and v.tags.get("deployed_image")]
    if not earlier:
        raise SystemExit(
            f"rollback: no deployed version of {REGISTERED_MODEL} before v{current} "
            "(scripts/record_deployment.py tags each release): nothing to return to"
        )
    return max(earlier, key=lambda v: int(v.version))


def champion(client):
    """The version the alias `champion` marks, or a clear stop when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(REGISTERED_MODEL, CHAMPION_ALIAS)
    except MlflowException as error:
        raise SystemExit(
            f"rollback: {REGISTERED_MODEL} has no `{CHAMPION_ALIAS}` alias in the registry "
            f"at {os.environ['MLFLOW_TRACKING_URI']}: {error.message}"
        ) from error


def release(root: Path, overlay: str, image: str, bundle_version: str | None) -> int:
    """rollout.sh OVERLAY IMAGE; the smoke test expects the bundle the registry recorded."""
    env = dict(os.environ)
    if bundle_version and not env.get("MODEL_VERSION"):
        env["MODEL_VERSION"] = bundle_version
    script = root / "deployment" / "kubernetes" / "rollout.sh"
    return subprocess.run([str(script), overlay, image], cwd=root, env=env, check=False).returncode


def rollback_record(current, back, image: str) -> RegistryRecord:
    from stages.registry import who

    return RegistryRecord(
        version=str(back.version),
        bundle_version=back.tags.get("bundle_version", "unknown"),
        data_version=back.tags.get("data_version"),
        git_revision=back.tags.get("git_revision"),
        run_id=back.run_id,
        promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        promoted_by=who(),
        reason=f"rollback from v{current.version} to v{back.version} ({image})",
    )


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("overlay")
    parser.add_argument("--no-rollout", action="store_true", help="move the alias only")
    parser.add_argument("--root", type=Path, default=ROOT, help="project root (this checkout)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SystemExit("set MLFLOW_TRACKING_URI: the registry says which model came before")
    import mlflow

    from stages.registry import append_audit

    # The URI named, not mlflow's process-wide default (an earlier set_tracking_uri wins).
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    current = champion(client)
    back = previous(client, int(current.version))
    image = back.tags["deployed_image"]
    if not args.no_rollout:
        code = release(args.root, args.overlay, image, back.tags.get("bundle_version"))
        if code != 0:
            print(
                f"rollback: the rollout of {image} failed (rollout.sh exit {code}); the alias "
                f"{CHAMPION_ALIAS} stays on {REGISTERED_MODEL} v{current.version}, and neither "
                "models/registry.json nor docs/promotions.md was changed",
                file=sys.stderr,
            )
            return 1
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION_ALIAS, back.version)
    record = rollback_record(current, back, image)
    (args.root / "models").mkdir(parents=True, exist_ok=True)
    record.write(args.root / "models")
    append_audit(args.root / "docs" / "promotions.md", "rollback", record)
    print(f"rolled back: {REGISTERED_MODEL} v{current.version} -> v{back.version}, {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
