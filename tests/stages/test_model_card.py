"""MODEL_CARD.md: every export writes one into the bundle, with the sections issue 22
names, and the same checkpoint gives the same card bytes (no timestamps on it).

The bundle is the fast tier's tiny bundle, written by export's own card code
(tests/helpers/tiny_bundle.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stages.model_card import CARD_FILE
from tests.helpers import tiny_bundle
from tests.helpers.photos import LABELS

INTERVAL = r"(0|1)\.\d{4} \[(0|1)\.\d{4}, (0|1)\.\d{4}\]"


def section(card: str, title: str) -> str:
    """The text under `## title`, up to the next section."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, re.M | re.S)
    assert found, f"no section {title!r} in the card:\n{card}"
    return found.group(1)


def test_the_bundle_carries_a_card_with_each_section(tiny_bundle_dir: Path) -> None:
    card = (tiny_bundle_dir / CARD_FILE).read_text()
    assert "pet photos" in section(card, "Intended use")
    model = section(card, "Model")
    assert f"data version (data/raw.dvc md5) {tiny_bundle.data_version()}" in model
    photos = len(tiny_bundle.photo_names())
    assert f"split sizes: train {photos}, test {photos}" in model
    figures = section(card, "Figures on the test split (the served graph)")
    for label in LABELS:  # recall and precision, each with its Wilson interval
        assert re.search(rf"^\| {label} \| \d+ \| {INTERVAL} \| {INTERVAL} \|$", figures, re.M)
    assert re.search(r"Expected calibration error 0\.\d{4}.*log loss \d\.\d{4}", card)
    assert re.search(r"Python 3\.\d+.*torch .*ONNX Runtime", section(card, "Trained in"))
    failures = section(card, "Known failure modes")
    assert "label review" in failures
    assert re.search(r"^- `(cat|dog)/\d+\.jpg`: labelled (cat|dog), answered", failures, re.M)
    unknown = section(card, "What the model does not know")
    assert "neither animal" in unknown and "both" in unknown


def test_two_exports_of_one_checkpoint_write_the_same_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiny_bundle, "EPOCHS", 1)  # any checkpoint will do: one epoch is quicker
    images, labels = tiny_bundle.labelled_photos(tiny_bundle.SIZE)
    net = tiny_bundle.trained_net(images, labels)
    first = tiny_bundle.export_tiny(net, tmp_path / "first")
    second = tiny_bundle.export_tiny(net, tmp_path / "second")
    assert (first / CARD_FILE).read_bytes() == (second / CARD_FILE).read_bytes()
    assert (first / "model.onnx").read_bytes() == (second / "model.onnx").read_bytes()
