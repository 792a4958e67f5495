"""conf/ composed by Hydra, as `dvc exp run` composes it into params.yaml."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"


def composed(overrides: list[str] | None = None) -> dict:
    """The resolved composition of conf/config.yaml with Hydra `overrides`."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return OmegaConf.to_container(compose("config", overrides=overrides or []), resolve=True)
