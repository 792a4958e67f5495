"""The public data path, offline: a stand-in archive of the real one's layout, built from
the committed photos, reached through a file:// URL (and http:// on loopback, the way
DVC downloads the real one); then, marked slow, a clone with no remote that fetches,
prepares and trains on it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.public_data import ArchiveError, extract
from tests.conftest import copy_project
from tests.helpers.commands import run, venv_env
from tests.helpers.public_archive import DAMAGED, EMPTY, StandIn, build_standin_archive
from tests.helpers.servers import free_port, running, start_server

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE_NAME = "kagglecatsanddogs_5340.zip"


@pytest.fixture()
def standin(tmp_path: Path) -> StandIn:
    """20 committed photos per class, an empty and a damaged file, and the leftovers."""
    (tmp_path / "source").mkdir()
    return build_standin_archive(tmp_path / "source" / ARCHIVE_NAME, per_class=20)


def dvc_repo(path: Path) -> Path:
    """A fresh DVC repository with the project's params.yaml (it names paths.raw)."""
    path.mkdir()
    run(["git", "init", "-q"], path)
    run(["dvc", "init", "-q"], path)
    shutil.copy2(ROOT / "params.yaml", path / "params.yaml")
    return path


def fetch(repo: Path, url: str, sha256: str, *extra: str) -> subprocess.CompletedProcess:
    """`python -m stages.public_data` in `repo`, as a user runs it (this checkout's code)."""
    command = [sys.executable, "-m", "stages.public_data", "--url", url, "--sha256", sha256]
    env = {**venv_env(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*command, *extra], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )


def expected_files(standin: StandIn) -> set[str]:
    """What data/raw must hold: the photos, the empty and the damaged file, nothing else."""
    bad = {name.removeprefix("PetImages/").lower() for name in (EMPTY, DAMAGED)}
    return set(standin.photos) | bad


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_extract_takes_photos_1001_to_6000_of_each_class_byte_for_byte(
    standin: StandIn, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    extracted = extract(standin.path, raw, 1001, 6000)
    assert files_under(raw) == expected_files(standin)
    for relative, photo in standin.photos.items():
        assert (raw / relative).read_bytes() == photo.read_bytes(), relative
    assert (raw / "cat" / "5999.jpg").stat().st_size == 0
    assert extracted.per_class == {"cat": 21, "dog": 21}
    assert extracted.empty == 1 and extracted.skipped_outside_range == 2


def test_a_range_with_no_photos_is_refused_and_the_old_photos_stay(
    standin: StandIn, tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    (raw / "cat").mkdir(parents=True)
    (raw / "cat" / "mine.jpg").write_bytes(b"kept")
    with pytest.raises(ArchiveError, match="holds no PetImages"):
        extract(standin.path, raw, 7000, 8000)
    assert files_under(raw) == {"cat/mine.jpg"}
    assert not raw.with_name("raw.partial").exists()


@pytest.mark.slow  # DVC imports in a subprocess
def test_file_url_is_imported_with_dvc_proven_and_tracked(standin: StandIn, tmp_path: Path) -> None:
    repo = dvc_repo(tmp_path / "repo")
    result = fetch(repo, standin.url, standin.sha256, "--size", str(standin.size))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "size and sha256 as declared" in result.stdout

    imported = yaml.safe_load((repo / "data/public" / f"{ARCHIVE_NAME}.dvc").read_text())
    assert imported["frozen"] is True
    assert imported["deps"][0]["path"] == str(standin.path)  # the source DVC re-imports from
    assert imported["outs"][0]["size"] == standin.size
    raw_dvc = yaml.safe_load((repo / "data/raw.dvc").read_text())["outs"][0]
    assert raw_dvc["nfiles"] == len(expected_files(standin))
    assert files_under(repo / "data/raw") == expected_files(standin)
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status

    again = fetch(repo, standin.url, standin.sha256)
    assert again.returncode == 1 and "add --replace" in again.stderr
    replaced = fetch(repo, standin.url, standin.sha256, "--replace", "--last", "1010")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert "is already imported" in replaced.stdout  # not downloaded twice
    assert len(files_under(repo / "data/raw")) == 20


@pytest.mark.slow  # DVC imports in a subprocess
def test_an_archive_with_another_checksum_is_refused_and_removed(
    standin: StandIn, tmp_path: Path
) -> None:
    repo = dvc_repo(tmp_path / "repo")
    result = fetch(repo, standin.url, "0" * 64)
    assert result.returncode == 1
    assert f"has sha256 {standin.sha256}" in result.stderr and "should have 0000" in result.stderr
    assert not (repo / "data/public" / ARCHIVE_NAME).exists()
    assert not (repo / "data/public" / f"{ARCHIVE_NAME}.dvc").exists()
    assert not (repo / "data/raw").exists()

    wrong_size = fetch(repo, standin.url, standin.sha256, "--size", str(standin.size + 1))
    assert wrong_size.returncode == 1 and f"should have {standin.size + 1}" in wrong_size.stderr


@pytest.mark.slow  # DVC imports in a subprocess
def test_the_archive_over_http_as_dvc_downloads_the_real_one(
    standin: StandIn, tmp_path: Path
) -> None:
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    command += ["--directory", str(standin.path.parent)]
    server = start_server(command, port, tmp_path / "http.log", health_path="/")
    repo = dvc_repo(tmp_path / "repo")
    with running(server):
        url = f"{server.url}/{ARCHIVE_NAME}"
        result = fetch(repo, url, standin.sha256, "--size", str(standin.size))
    assert result.returncode == 0, result.stdout + result.stderr
    imported = yaml.safe_load((repo / "data/public" / f"{ARCHIVE_NAME}.dvc").read_text())
    assert imported["deps"][0]["path"] == url
    assert (repo / "data/public" / ARCHIVE_NAME).read_bytes() == standin.path.read_bytes()
    assert files_under(repo / "data/raw") == expected_files(standin)


# Tiny settings: a narrow CNN on 64 px photos for one epoch; the point is the road, not
# the model (about 30 s of the test on two cores).
E2E_OVERRIDES = [
    "model=cnn",
    "model.channels=[8,16,16,32]",
    "prepare.image_size=64",
    "prepare.split.train=0.6",
    "prepare.split.val=0.2",
    "prepare.split.test=0.2",
    "data.train_size=null",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "export.precision=fp32",
]


@pytest.mark.slow
def test_a_clone_without_remote_fetches_prepares_and_trains_on_the_public_archive(
    tmp_path: Path,
) -> None:
    standin = build_standin_archive(tmp_path / ARCHIVE_NAME)  # all 2 x 200 committed photos
    repo = tmp_path / "clone"
    copy_project(repo)  # what a GitHub clone holds: data/raw.dvc names the team's sample
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "raw.dvc").write_text((ROOT / "data" / "raw.dvc").read_text())
    assert not (tmp_path / "shared").exists()  # the sample remote, ../shared/dvc-store
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"], repo)

    setup_step = run(
        [sys.executable, "scripts/pull_data.py"], repo, env={"CI": "false", "SKIP_DVC_PULL": "0"}
    )
    assert "not on this machine" in setup_step.stdout
    assert "python -m stages.public_data" in setup_step.stdout

    fetched = run([sys.executable, "-m", "stages.public_data", "--url", standin.url,
                   "--sha256", standin.sha256, "--size", str(standin.size)], repo)  # fmt: skip
    assert "data/raw: 201 cat, 201 dog" in fetched.stdout
    overrides = [arg for override in E2E_OVERRIDES for arg in ("-S", override)]
    run(["dvc", "exp", "run", "--name", "public", *overrides, "train"], repo, timeout=600)

    prepare = json.loads((repo / "metrics/prepare.json").read_text())
    assert prepare["files"] == 402 and prepare["kept"] == 400
    assert prepare["skipped_by_reason"] == {"corrupt": 1, "empty": 1}
    raw_md5 = yaml.safe_load((repo / "data/raw.dvc").read_text())["outs"][0]["md5"]
    sample_md5 = yaml.safe_load((ROOT / "data/raw.dvc").read_text())["outs"][0]["md5"]
    meta = json.loads((repo / "data/prepared/meta.json").read_text())
    assert meta["data_version"] == raw_md5 != sample_md5  # the bundle will name these photos
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["epochs"] == 1 and 0 <= train["val_acc"] <= 1
    assert (repo / "models/checkpoints/best.ckpt").is_file()
