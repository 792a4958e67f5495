"""The promotion gate: its rules on known figures, and the command on two real bundles.

The bundles are the fast tier's tiny bundle (tests/helpers/tiny_bundle.py: the export
code on a small CNN) and a weaker twin trained for one epoch instead of eight, scored on
the committed photographs as the test split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from contracts.registry import RegistryRecord
from stages import promote
from stages.paired_stats import Interval
from stages.promotion import Comparison, decide
from tests.helpers import tiny_bundle
from tests.helpers.config import composed

RULES = OmegaConf.create(composed()["promotion"])


def figures(version: str, accuracy: float, **changes) -> dict:
    base = {
        "bundle_version": version,
        "directory": "x",
        "precision": "fp32",
        "accuracy": accuracy,
        "recall": {"cat": accuracy, "dog": accuracy},
        "log_loss": 0.1,
        "ece": 0.02,
        "ms_per_photo": 5.0,
        "size_bytes": 1000,
    }
    return {**base, **changes}


def comparison(new: dict, gained: int, lost: int, p: float, low: float = -0.001) -> Comparison:
    old = figures("champ", 0.98)
    diff = (gained - lost) / 980
    return Comparison(old, new, 980, gained, lost, p, diff, Interval(low, diff + 0.003))


def test_the_same_bundle_is_no_change_not_an_error() -> None:
    decision = decide(comparison(figures("champ", 0.98), 0, 0, 1.0), RULES)
    assert decision.outcome == "no_change"


def test_a_significant_gain_is_accepted() -> None:
    decision = decide(comparison(figures("new", 0.99, ms_per_photo=5.5), 12, 1, 0.003), RULES)
    assert decision.outcome == "accept"
    assert "significantly more accurate" in decision.reasons[0]


def test_a_gain_of_two_photos_is_noise_and_refused() -> None:
    decision = decide(comparison(figures("new", 0.982), 3, 1, 0.625), RULES)
    assert decision.outcome == "refuse"
    assert "no significant accuracy change" in decision.reasons[0]


def test_equal_accuracy_at_half_the_cost_is_accepted() -> None:
    decision = decide(comparison(figures("new", 0.98, ms_per_photo=2.5), 1, 1, 1.0), RULES)
    assert decision.outcome == "accept"
    assert "cheaper at equal accuracy" in decision.reasons[0]


def test_cheaper_but_possibly_much_worse_is_refused() -> None:
    new = figures("new", 0.978, ms_per_photo=2.5)
    decision = decide(comparison(new, 1, 3, 0.625, low=-0.02), RULES)
    assert decision.outcome == "refuse"


def test_each_broken_guard_is_named_even_when_more_accurate() -> None:
    new = figures("new", 0.99, recall={"cat": 0.95, "dog": 1.0}, size_bytes=5000)
    decision = decide(comparison(new, 12, 1, 0.003), RULES)
    assert decision.outcome == "refuse"
    said = " ".join(decision.reasons)
    assert "cat recall drops" in said and "promotion.guards.size_growth" in said


@pytest.fixture(scope="module")
def gate_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with params.yaml, a test split of the committed photos, and two bundles."""
    root = tmp_path_factory.mktemp("gate")
    images, labels = tiny_bundle.labelled_photos(tiny_bundle.SIZE)
    prepared = root / "data" / "prepared"
    prepared.mkdir(parents=True)
    np.save(prepared / "test_images.npy", images)
    np.save(prepared / "test_labels.npy", labels)
    np.save(prepared / "val_images.npy", images[::3])  # a stand-in validation split
    np.save(prepared / "val_labels.npy", labels[::3])
    params = composed()
    params["paths"] = {k: str(root / v) for k, v in params["paths"].items()}
    params["promotion"]["bootstrap"]["samples"] = 500
    OmegaConf.save(OmegaConf.create(params), root / "params.yaml")
    tiny_bundle.build_tiny_bundle(root / "strong")
    saved = tiny_bundle.EPOCHS
    tiny_bundle.EPOCHS = 1
    try:
        tiny_bundle.build_tiny_bundle(root / "weak")
    finally:
        tiny_bundle.EPOCHS = saved
    return root


def run_gate(root: Path, monkeypatch, *args: str) -> tuple[int, dict]:
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    code = promote.main([*args, "--audit", str(root / "promotions.md")])
    return code, json.loads((root / "metrics" / "promotion.json").read_text())


@pytest.mark.slow
def test_the_gate_refuses_a_weaker_bundle_and_registers_nothing(gate_repo, monkeypatch) -> None:
    code, result = run_gate(gate_repo, monkeypatch, "weak", "--champion", "strong")
    assert result["photos"] == len(np.load(gate_repo / "data/prepared/test_labels.npy"))
    assert result["challenger"]["accuracy"] < result["champion"]["accuracy"]
    assert (code, result["decision"]) == (1, "refuse")
    assert result["lost"] > result["gained"]
    assert not (gate_repo / "models" / "registry.json").exists()
    report = (gate_repo / "plots" / "promotion" / "report.md").read_text()
    assert "REFUSED" in report and "disagreements.png" in report


@pytest.mark.slow
def test_with_validation_the_gate_compares_on_both_splits(gate_repo, monkeypatch) -> None:
    """Recipes compare on twice the photos: the validation split joins the test split."""
    args = ["weak", "--champion", "strong", "--dry-run", "--with-validation"]
    code, result = run_gate(gate_repo, monkeypatch, *args)
    test = len(np.load(gate_repo / "data/prepared/test_labels.npy"))
    val = len(np.load(gate_repo / "data/prepared/val_labels.npy"))
    assert result["photos"] == test + val and code == 1
    assert not (gate_repo / "models" / "registry.json").exists()


@pytest.mark.slow
def test_the_gate_calls_the_same_bundle_no_change(gate_repo, monkeypatch) -> None:
    code, result = run_gate(gate_repo, monkeypatch, "strong", "--champion", "strong")
    assert (code, result["decision"], result["disagreements"]) == (0, "no_change", 0)


@pytest.mark.slow
def test_a_person_can_override_a_refusal_and_the_refusal_is_kept(gate_repo, monkeypatch) -> None:
    """--override promotes a refused challenger, and both the person's reason and the gate's
    refusal stay in registry.json and the audit trail (action "override")."""
    code, result = run_gate(
        gate_repo, monkeypatch, "weak", "--champion", "strong", "--override", "needs the OOD flag"
    )
    assert (code, result["decision"]) == (0, "refuse")
    record = RegistryRecord.read(gate_repo / "models")
    weak = json.loads((gate_repo / "weak" / "model.json").read_text())
    assert record is not None and record.bundle_version == weak["version"]
    assert record.reason.startswith("override by a person: needs the OOD flag (the gate refused:")
    audit = (gate_repo / "promotions.md").read_text().splitlines()[-1]
    assert "| override |" in audit and weak["version"] in audit


@pytest.mark.slow
def test_an_accepted_bundle_is_registered_with_the_champion_alias(gate_repo, monkeypatch) -> None:
    import mlflow

    # The one-epoch twin calls every photo a cat, so the strong bundle's cat recall is lower:
    # the guards would refuse it (as the refusal test's report shows); a user loosens them here.
    params = OmegaConf.load(gate_repo / "params.yaml")
    params.promotion.guards.recall_drop = 1.0
    params.promotion.guards.ece_increase = 1.0  # tiny models' calibration moves a lot too
    OmegaConf.save(params, gate_repo / "params.yaml")
    code, result = run_gate(gate_repo, monkeypatch, "strong", "--champion", "weak")
    assert (code, result["decision"]) == (0, "accept"), result["reasons"]
    record = RegistryRecord.read(gate_repo / "models")
    strong = json.loads((gate_repo / "strong" / "model.json").read_text())
    assert record is not None and record.bundle_version == strong["version"]
    client = mlflow.MlflowClient(f"sqlite:///{gate_repo / 'mlflow.db'}")
    version = client.get_model_version_by_alias(record.name, "champion")
    assert str(version.version) == record.version
    assert version.tags["bundle_version"] == strong["version"]
    model = mlflow.models.get_model_info(f"models:/{record.name}@champion")
    assert model.signature is not None and model.saved_input_example_info is not None
    assert strong["version"] in (gate_repo / "promotions.md").read_text()
