"""Export's proofs: a graph that disagrees with PyTorch, or an int8 graph that loses too much, is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from contracts.imaging import load, to_batch
from stages.export import (
    HeldOutPhotos,
    Scored,
    Served,
    export_onnx,
    prove_agreement,
    quantized_or_refused,
)
from stages.models import small_cnn
from stages.quantize import quantize_int8, session
from tests.helpers.photos import LABELS, sample_photos

ROOT = Path(__file__).resolve().parents[2]


def test_export_refuses_a_graph_that_disagrees_with_pytorch(tmp_path: Path) -> None:
    model = Served(small_cnn(2, channels=(8,), convs_per_stage=(1,)), tta=False).eval()
    export_onnx(model, 32, tmp_path / "m.onnx", opset=18)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    assert prove_agreement(model, session, images, tolerance=1e-4) < 1e-4
    with torch.no_grad():
        model.net.head.bias[0] += 5.0  # PyTorch now favours "cat"; the ONNX file does not
    with pytest.raises(SystemExit, match="disagree"):
        prove_agreement(model, session, images, tolerance=1e-4)


def test_export_refuses_an_int8_graph_that_loses_too_much(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    model = Served(small_cnn(2, channels=(8, 16), convs_per_stage=(1, 1)), tta=False).eval()
    fp32_path = tmp_path / "export" / "model.fp32.onnx"
    fp32_path.parent.mkdir()
    export_onnx(model, 32, fp32_path, opset=18)
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    test = HeldOutPhotos(
        rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), rng.integers(0, 2, 8)
    )
    cfg = OmegaConf.create(
        {
            "timing": {"batch_size": 4, "photos": 8},
            "int8": {
                "calibration": "minmax",
                "calibration_batch_size": 8,
                "keep_float": ["softmax"],
                "max_accuracy_drop": 0.003,
            },
        }
    )
    # A float accuracy that no graph can keep: the int8 graph must be refused, loudly.
    impossible = Scored(np.zeros((8, 2)), accuracy=1.5, ms_per_photo=1.0)
    with pytest.raises(SystemExit, match="points below float32"):
        quantized_or_refused(cfg, fp32_path, impossible, test, calibration)
    assert not list((tmp_path / "export").glob("*int8*"))
    cfg.int8.max_accuracy_drop = 1.0  # the same graph passes a looser limit
    int8_path, scored = quantized_or_refused(cfg, fp32_path, impossible, test, calibration)
    assert int8_path.is_file() and scored.probs.shape == (8, 2)
    assert 0 <= scored.accuracy <= 1 and scored.ms_per_photo > 0


def test_a_tta_graph_averages_photo_and_mirror_also_in_int8(tmp_path: Path) -> None:
    """export.tta: one graph for photos and mirrors, whose int8 probabilities still sum to 1."""
    torch.manual_seed(0)
    model = Served(small_cnn(2, channels=(8, 16), convs_per_stage=(1, 1)), tta=True).eval()
    photos = [load(p.read_bytes(), 32) for label in LABELS for p in sample_photos(label, 8)]
    batch = to_batch(photos)
    fp32_path, int8_path = tmp_path / "model.fp32.onnx", tmp_path / "model.int8.onnx"
    export_onnx(model, 32, fp32_path, opset=18)
    with torch.inference_mode():
        pixels = torch.from_numpy(batch)
        expected = (model.net(pixels)[1].softmax(1) + model.net(pixels.flip(3))[1].softmax(1)) / 2
    fp32 = session(fp32_path).run(None, {"image": batch})[0]
    mirrored = session(fp32_path).run(None, {"image": batch[..., ::-1].copy()})[0]
    assert np.allclose(fp32, expected.numpy(), atol=1e-5)
    assert np.allclose(fp32, mirrored, atol=1e-5)  # a photo and its mirror get one answer
    keep = ["softmax", "first_conv", "classifier"]
    quantize_int8(fp32_path, int8_path, np.stack(photos), "minmax", keep)
    int8 = session(int8_path).run(None, {"image": batch})[0]
    assert np.allclose(int8.sum(1), 1.0, atol=1e-5)
    assert np.abs(int8 - fp32).max() < 0.1


def test_the_same_model_exports_and_quantizes_to_the_same_bytes(tmp_path: Path) -> None:
    """Same checkpoint, same bundle version: export and int8 calibration are deterministic."""
    torch.manual_seed(0)
    model = Served(small_cnn(2, channels=(8, 16), convs_per_stage=(1, 1)), tta=False).eval()
    photos = np.stack(
        [load(p.read_bytes(), 32) for label in LABELS for p in sample_photos(label, 8)]
    )
    digests = set()
    for attempt in ("a", "b"):
        fp32_path, int8_path = tmp_path / f"{attempt}.fp32.onnx", tmp_path / f"{attempt}.int8.onnx"
        export_onnx(model, 32, fp32_path, opset=18)
        quantize_int8(fp32_path, int8_path, photos, "minmax", ["softmax"], batch_size=8)
        digests.add((fp32_path.read_bytes(), int8_path.read_bytes()))
    assert len(digests) == 1


def test_the_exported_graph_names_no_path_of_this_checkout(tmp_path: Path) -> None:
    """The bundle's bytes must not depend on where the repository was cloned."""
    model = Served(small_cnn(2, channels=(8,), convs_per_stage=(1,)), tta=False).eval()
    export_onnx(model, 32, tmp_path / "m.onnx", opset=18)
    graph = onnx.load(str(tmp_path / "m.onnx"))
    keys = {p.key for node in graph.graph.node for p in node.metadata_props}
    assert "pkg.torch.onnx.stack_trace" not in keys
    assert str(ROOT).encode() not in (tmp_path / "m.onnx").read_bytes()


def test_the_served_graph_divides_logits_by_the_temperature_and_outputs_features(
    tmp_path: Path,
) -> None:
    """probabilities = softmax(logits / T) in the float and the int8 graph; `features` second."""
    torch.manual_seed(0)
    net = small_cnn(2, channels=(8, 16), convs_per_stage=(1, 1))
    model = Served(net, tta=False, temperature=2.5).eval()
    photos = np.stack([load(p.read_bytes(), 32) for lb in LABELS for p in sample_photos(lb, 8)])
    batch = to_batch(photos)
    fp32_path, int8_path = tmp_path / "model.fp32.onnx", tmp_path / "model.int8.onnx"
    export_onnx(model, 32, fp32_path, opset=18)
    with torch.inference_mode():
        features, logits = model.net(torch.from_numpy(batch))
    graph = session(fp32_path)
    assert [o.name for o in graph.get_outputs()] == ["probabilities", "features"]
    probs, feats = graph.run(None, {"image": batch})
    assert np.allclose(probs, (logits / 2.5).softmax(1).numpy(), atol=1e-5)
    assert feats.shape == (len(batch), 16) and np.allclose(feats, features.numpy(), atol=1e-4)
    quantize_int8(fp32_path, int8_path, photos, "minmax", ["softmax", "classifier"], 8)
    int8_probs, int8_feats = session(int8_path).run(None, {"image": batch})
    assert np.allclose(int8_probs.sum(1), 1.0, atol=1e-5) and int8_feats.shape == feats.shape
    # the temperature's Mul stays float: int8 confidences track the float ones closely
    assert np.abs(int8_probs - probs).max() < 0.1


def test_the_bundle_version_changes_with_any_part_of_the_ood_description() -> None:
    """k or the threshold change what /predict answers: same graph and reference file,
    another version (a gate comparing them must not call them the same bundle)."""
    from contracts.bundle import OodSpec
    from stages.export import bundle_version

    spec = OodSpec(
        method="knn", file="ood.npz", sha256="0" * 64, feature_output="features",
        feature_dim=8, k=10, threshold=0.5, pass_rate=0.95, reference_photos=100,
        threshold_photos=50,
    )  # fmt: skip
    versions = {
        bundle_version("a" * 64, spec),
        bundle_version("a" * 64, spec.model_copy(update={"k": 5})),
        bundle_version("a" * 64, spec.model_copy(update={"threshold": 0.6})),
        bundle_version("b" * 64, spec),
        bundle_version("a" * 64, None),
    }
    assert len(versions) == 5
    assert bundle_version("a" * 64, spec) == bundle_version("a" * 64, spec)
