"""Configuration: params.yaml is conf/ composed, and stages take their settings from it."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from stages.lightning_module import build_model
from tests.helpers.config import composed

ROOT = Path(__file__).resolve().parents[2]


def test_params_yaml_equals_the_composition_of_conf() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params == composed(), (
        "params.yaml is stale: run `dvc exp run` (which composes conf/) or regenerate it"
    )


def test_every_stage_param_section_exists() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = composed()
    for name, stage in stages.items():
        for key in stage.get("params", []):
            section = params
            for part in key.split("."):  # dotted keys name one value inside a section
                assert part in section, f"stage {name} declares unknown param {key}"
                section = section[part]


def test_cnn_baseline_preset_composes_into_a_small_cnn() -> None:
    cfg = composed(["experiment=cnn_baseline"])
    assert cfg["model"]["name"] == "cnn" and cfg["prepare"]["image_size"] == 112
    assert cfg["trainer"]["max_epochs"] == 10 and cfg["optimizer"]["lr"] == 3e-3
    net = build_model(cfg["model"], num_classes=2).eval()
    with torch.inference_mode():
        assert net(torch.rand(2, 3, 112, 112)).shape == (2, 2)


def test_stages_take_their_paths_from_the_configuration() -> None:
    """No stage hard-codes a folder that conf/paths names; dvc.yaml uses ${paths.*}."""
    paths = composed()["paths"]
    folders = [paths[name] for name in ("raw", "prepared", "checkpoints", "export")]
    for module in sorted((ROOT / "stages").glob("*.py")):
        text = module.read_text()
        for folder in folders:
            assert f'"{folder}' not in text, f"{module.name} hard-codes {folder}"
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    for folder in folders:
        assert f" {folder}" not in dvc_yaml, f"dvc.yaml hard-codes {folder}"
    assert "${paths.prepared}" in dvc_yaml and "${paths.export}" in dvc_yaml
