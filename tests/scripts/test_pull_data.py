"""setup.sh's data step (scripts/pull_data.py): the configured remote first, else words.

Real repositories in tmp, a real S3 API (moto on 127.0.0.1) for the remote that works and
for the one without credentials; HOME points into tmp so no ~/.aws of the machine counts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.commands import run, venv_env
from tests.helpers.photos import LABELS, sample_photos
from tests.helpers.s3 import CREDENTIALS, s3_client

pytestmark = pytest.mark.slow  # DVC against remotes, or a browser: not the fast tier

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_COMMAND = "python -m stages.public_data"


def repo_with_photos(path: Path) -> Path:
    """A DVC repository whose data/raw (10 photos) is tracked, with scripts/pull_data.py."""
    raw = path / "data" / "raw"
    for label in LABELS:
        (raw / label).mkdir(parents=True)
        for photo in sample_photos(label, 5):
            shutil.copy(photo, raw / label / photo.name)
    run(["git", "init", "-q"], path)
    run(["dvc", "init", "-q"], path)
    run(["dvc", "add", "data/raw"], path)
    (path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "pull_data.py", path / "scripts" / "pull_data.py")
    return path


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No AWS settings of this machine, no CI skip: what a newcomer's shell has."""
    env = {k: v for k, v in venv_env().items() if not k.startswith("AWS_")}
    return {**env, "HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true", "CI": "false",
            "SKIP_DVC_PULL": "0", **extra}  # fmt: skip


def pull_data(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/pull_data.py"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def forget_photos(repo: Path) -> None:
    shutil.rmtree(repo / "data" / "raw")
    shutil.rmtree(repo / ".dvc" / "cache")


def pushed_to_s3(tmp_path: Path, s3_endpoint: str) -> Path:
    """A repository whose photos went to an S3 remote (`storage`), then left the clone."""
    s3_client(s3_endpoint).create_bucket(Bucket="photos")
    repo = repo_with_photos(tmp_path / "repo")
    run(["dvc", "remote", "add", "-d", "storage", "s3://photos/store"], repo)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3_endpoint], repo)
    run(["dvc", "push"], repo, env=CREDENTIALS)
    forget_photos(repo)
    return repo


def test_an_s3_remote_is_pulled_with_credentials_and_named_without(
    tmp_path: Path, s3_endpoint: str
) -> None:
    repo = pushed_to_s3(tmp_path, s3_endpoint)

    refused = pull_data(repo, clean_env(tmp_path, AWS_DEFAULT_REGION="us-east-1"))
    assert refused.returncode == 1
    assert "'storage' (s3://photos/store) is an S3 bucket and no AWS credentials" in refused.stderr
    assert PUBLIC_COMMAND in refused.stderr
    assert not (repo / "data" / "raw").exists()

    pulled = pull_data(repo, clean_env(tmp_path, **CREDENTIALS))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "Pulling the photographs from the default DVC remote 'storage'" in pulled.stdout
    assert len(list((repo / "data" / "raw").rglob("*.jpg"))) == 10


def test_credentials_in_the_remotes_local_config_count(tmp_path: Path, s3_endpoint: str) -> None:
    repo = pushed_to_s3(tmp_path, s3_endpoint)
    for key, value in (("access_key_id", "testing"), ("secret_access_key", "testing")):
        run(["dvc", "remote", "modify", "--local", "storage", key, value], repo)

    pulled = pull_data(repo, clean_env(tmp_path, AWS_DEFAULT_REGION="us-east-1"))
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert len(list((repo / "data" / "raw").rglob("*.jpg"))) == 10


def test_a_failing_remote_stops_with_the_reason_and_both_ways_on(tmp_path: Path) -> None:
    repo = repo_with_photos(tmp_path / "repo")
    empty_store = tmp_path / "store"
    empty_store.mkdir()
    run(["dvc", "remote", "add", "-d", "team", str(empty_store)], repo)
    forget_photos(repo)
    result = pull_data(repo, clean_env(tmp_path))
    assert result.returncode == 1
    assert f"dvc pull from the default DVC remote 'team' ({empty_store}) failed" in result.stderr
    assert PUBLIC_COMMAND in result.stderr


def test_a_missing_team_folder_or_no_remote_names_the_public_command(tmp_path: Path) -> None:
    repo = repo_with_photos(tmp_path / "repo")
    none = pull_data(repo, clean_env(tmp_path))
    assert none.returncode == 0 and "No default DVC remote" in none.stdout
    assert PUBLIC_COMMAND in none.stdout

    run(
        ["dvc", "remote", "add", "-d", "sample", "../shared/dvc-store"], repo
    )  # as the team adds it
    absent = pull_data(repo, clean_env(tmp_path))
    assert absent.returncode == 0
    assert f"({tmp_path / 'shared' / 'dvc-store'}) is a folder that is not on" in absent.stdout
    assert PUBLIC_COMMAND in absent.stdout

    skipped = pull_data(repo, clean_env(tmp_path, CI="true"))
    assert skipped.returncode == 0 and "Skipping dvc pull" in skipped.stdout
