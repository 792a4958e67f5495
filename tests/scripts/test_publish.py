"""Data versioning through a real S3 API: dvc push to a bucket, wipe, dvc pull, compare.

moto's standalone server plays S3 on 127.0.0.1; DVC talks to it with dvc-s3 exactly as
it would to AWS or MinIO (docs/data.md: "Your own S3 remote").
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.commands import run, venv_env
from tests.helpers.photos import LABELS, sample_photos
from tests.helpers.s3 import CREDENTIALS, s3_client

pytestmark = pytest.mark.slow  # DVC against remotes, or a browser: not the fast tier

ROOT = Path(__file__).resolve().parents[2]


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_push_and_pull_through_s3(tmp_path: Path, s3_endpoint: str) -> None:
    s3_client(s3_endpoint).create_bucket(Bucket="cats-dogs-data")
    repo = tmp_path / "repo"
    raw = repo / "data" / "raw"
    for label in LABELS:
        (raw / label).mkdir(parents=True)
        for photo in sample_photos(label, 25):
            shutil.copy(photo, raw / label / photo.name)
    before = digests(raw)

    env = {**venv_env(), **CREDENTIALS}

    def dvc(*args: str) -> str:
        result = subprocess.run(
            ["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    run(["git", "init", "-q"], repo)
    dvc("init", "-q")
    dvc("add", "data/raw")
    dvc("remote", "add", "-d", "storage", "s3://cats-dogs-data/dvcstore")
    dvc("remote", "modify", "storage", "endpointurl", s3_endpoint)
    dvc("push")

    listed = s3_client(s3_endpoint).list_objects_v2(Bucket="cats-dogs-data", Prefix="dvcstore/")
    assert listed["KeyCount"] >= 50  # 50 photos + the directory listing object

    shutil.rmtree(raw)
    shutil.rmtree(repo / ".dvc" / "cache")
    dvc("pull")
    assert digests(raw) == before


def test_publish_lets_a_fresh_clone_pull_the_bundle(
    pipeline_repo: Path, tmp_path: Path, s3_endpoint: str
) -> None:
    """scripts/publish after a pipeline run; then a clone of the commit pulls the exact
    bundle that its dvc.lock records, as CI and `docker build` elsewhere do."""
    s3_client(s3_endpoint).create_bucket(Bucket="cats-dogs-publish")
    repo = tmp_path / "repo"
    shutil.copytree(pipeline_repo, repo, symlinks=True)
    publish = run(
        [str(repo / "scripts" / "publish"), "s3://cats-dogs-publish/store", s3_endpoint],
        repo,
        env=CREDENTIALS,
    )
    assert "Published" in publish.stdout and "git add .dvc/config dvc.lock" in publish.stdout
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "add", ".dvc/config", "dvc.lock", "params.yaml"], repo)
    run(["git", *identity, "commit", "-qm", "publish"], repo)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models" / "export").exists()
    run(["dvc", "pull", "models/export"], clone, env=CREDENTIALS)
    assert digests(clone / "models" / "export") == digests(repo / "models" / "export")


def test_publish_refuses_a_local_remote_and_a_missing_bundle(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "publish", repo / "scripts" / "publish")
    publish = [str(repo / "scripts" / "publish")]
    result = subprocess.run([*publish], cwd=repo, env=venv_env(), capture_output=True, text=True)
    assert result.returncode == 1 and "no default DVC remote" in result.stderr
    run(["dvc", "remote", "add", "-d", "sample", str(tmp_path / "store")], repo)
    result = subprocess.run([*publish], cwd=repo, env=venv_env(), capture_output=True, text=True)
    assert result.returncode == 1 and "is a local folder" in result.stderr
    result = subprocess.run(
        [*publish, "s3://bucket/path"], cwd=repo, env=venv_env(), capture_output=True, text=True
    )
    assert result.returncode == 1 and "no dvc.lock: run dvc repro first" in result.stderr
