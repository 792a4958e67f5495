"""A copy of the deployment files with generated secrets, for the tests that render.

The overlays refuse to render without their secrets/ folders (never committed), and tests
never write into the checkout: the copy holds deployment/ (without any secrets/ a developer
generated here), links to scripts/ and tests/ (rollout.sh's smoke test and photo), and the
secrets scripts/make_secrets.py generates for each overlay.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("local", "production")


def copy_deployment(dest: Path) -> Path:
    """deployment/ without secrets, scripts/ and tests/ linked: a project root for rollout.sh."""
    shutil.copytree(ROOT / "deployment", dest / "deployment", ignore=shutil.ignore_patterns("secrets"))  # fmt: skip
    for linked in ("scripts", "tests"):
        (dest / linked).symlink_to(ROOT / linked)
    return dest


def make_secrets(root: Path, *args: str) -> str:
    script = ROOT / "scripts" / "make_secrets.py"
    command = [sys.executable, str(script), *args, "--root", str(root)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="session")
def deploy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project root whose overlays have their generated secrets."""
    root = copy_deployment(tmp_path_factory.mktemp("deploy"))
    for overlay in OVERLAYS:
        make_secrets(root, "kubernetes", overlay)
    return root
