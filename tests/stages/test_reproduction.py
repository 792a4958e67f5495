"""`python -m stages.reproduction`: within tolerance across machines, exact on the same one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stages import reproduction
from stages.fingerprint import environment_fingerprint
from tests.helpers.commands import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository whose committed metrics are the project's, fingerprinted here."""
    metrics = tmp_path / "metrics"
    shutil.copytree(ROOT / "metrics", metrics)
    train = json.loads((metrics / "train.json").read_text())
    train["environment"] = environment_fingerprint("32-true").model_dump()
    (metrics / "train.json").write_text(json.dumps(train))
    run(["git", "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"], tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit(path: Path, change: dict) -> None:
    report = json.loads(path.read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            report[key].update(value)
        else:
            report[key] = value
    path.write_text(json.dumps(report))


def test_same_machine_must_match_exactly(repo: Path, capsys: pytest.CaptureFixture) -> None:
    assert reproduction.main([]) == 0
    edit(repo / "metrics" / "train.json", {"train_seconds": 1.0})  # timings are not compared
    assert reproduction.main([]) == 0
    edit(repo / "metrics" / "evaluate.json", {"accuracy": 0.986735 - 0.001})
    assert reproduction.main([]) == 1
    out = capsys.readouterr().out
    assert "identical environments" in out and "OUTSIDE evaluate.json:accuracy" in out


def test_another_cpu_is_judged_by_tolerance_and_named(
    repo: Path, capsys: pytest.CaptureFixture
) -> None:
    train = repo / "metrics" / "train.json"
    edit(train, {"environment": {"cpu_flags": ["avx2", "fma"], "torch_cpu_capability": "AVX2"}})
    edit(repo / "metrics" / "export.json", {"served_test_accuracy": 0.9867})  # 2 photos
    assert reproduction.main([]) == 0
    out = capsys.readouterr().out
    assert "cpu_flags" in out and "torch_cpu_capability" in out
    edit(repo / "metrics" / "review_labels.json", {"disputed": 509 + 50})
    assert reproduction.main([]) == 1
    assert "OUTSIDE review_labels.json:disputed" in capsys.readouterr().out
