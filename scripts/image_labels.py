"""The image's OCI labels for the bundle in a model folder: `--label` arguments for
`docker build` (or KEY=VALUE lines with --lines, for docker/build-push-action).

    python scripts/image_labels.py models/export [--lines]

version is the bundle version (model.json); the registry version, alias, data version and
git revision come from models/registry.json when the promotion gate left one for this
bundle (docs/lifecycle.md), and say `unpromoted` otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.registry import REGISTRY_FILE, record_for_bundle  # noqa: E402


def labels(model_dir: Path) -> dict[str, str]:
    manifest = json.loads((model_dir / "model.json").read_text())
    record = record_for_bundle(model_dir)  # None: never promoted, or another bundle's record
    return {
        "org.opencontainers.image.version": manifest["version"],
        "io.catsdogs.registry.name": record.name if record else "unpromoted",
        "io.catsdogs.registry.version": record.version if record else "unpromoted",
        "io.catsdogs.registry.alias": (record.alias or "none") if record else "none",
        "io.catsdogs.data.version": manifest.get("data_version", "unknown"),
        "io.catsdogs.model.git-revision": manifest.get("git_revision", "unknown"),
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        raise SystemExit(
            f"usage: python scripts/image_labels.py MODEL_DIR [--lines]\n{REGISTRY_FILE}"
        )
    found = labels(Path(argv[0]))
    if "--lines" in argv:
        print("\n".join(f"{k}={v}" for k, v in found.items()))
    else:
        print(" ".join(f"--label {k}={v}" for k, v in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
