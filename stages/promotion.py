"""The promotion gate's library: score two bundles on the same photos, compare, decide.

Both bundles run through the served graph (ONNX Runtime on photos the image contract
decoded), so the gate judges what the pod would answer. The decision follows the rules in
params.yaml's `promotion` section (conf/promotion/default.yaml); docs/lifecycle.md
explains them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from omegaconf import DictConfig

from contracts.bundle import BundleError, BundleManifest
from stages import paired_stats
from stages.quantize import timed_predict

Outcome = Literal["accept", "refuse", "no_change"]


@dataclass(frozen=True)
class Photos:
    """The photos both models are scored on: uint8 [N, S, S, 3], labels, a name each."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]


@dataclass(frozen=True)
class ScoredBundle:
    """One bundle scored on the photos through its served graph."""

    role: str  # champion | challenger
    directory: Path
    manifest: BundleManifest
    probs: np.ndarray
    ms_per_photo: float
    size_bytes: int

    def right(self, labels: np.ndarray) -> np.ndarray:
        return self.probs.argmax(1) == labels


def score_bundle(role: str, directory: Path, photos: Photos, timing: DictConfig) -> ScoredBundle:
    """Verify the bundle (model.json, SHA-256) and run its graph on every photo."""
    manifest = BundleManifest.read(directory)
    model_file = manifest.verified_model_file(directory)
    if manifest.size != photos.images.shape[1]:
        raise BundleError(
            f"the {role} in {directory} takes {manifest.size}-pixel photos, the evaluation "
            f"photos are {photos.images.shape[1]}: compare bundles of the same input size"
        )
    probs, ms = timed_predict(
        model_file, photos.images, role, int(timing.batch_size), int(timing.photos)
    )
    return ScoredBundle(role, directory, manifest, probs, ms, model_file.stat().st_size)


def figures(scored: ScoredBundle, labels: np.ndarray, ece_bins: int) -> dict:
    """What the report shows for one model."""
    classes = scored.manifest.classes
    return {
        "bundle_version": scored.manifest.version,
        "directory": str(scored.directory),
        "precision": scored.manifest.precision,
        "accuracy": round(float(scored.right(labels).mean()), 6),
        "recall": {
            k: None if v is None else round(v, 6)
            for k, v in paired_stats.recall_per_class(
                scored.probs.argmax(1), labels, classes
            ).items()
        },
        "log_loss": round(paired_stats.log_loss(scored.probs, labels), 6),
        "ece": round(paired_stats.expected_calibration_error(scored.probs, labels, ece_bins), 6),
        "ms_per_photo": round(scored.ms_per_photo, 3),
        "size_bytes": scored.size_bytes,
    }


@dataclass(frozen=True)
class Comparison:
    """Both models' figures and the paired statistics on the same photos."""

    champion: dict
    challenger: dict
    photos: int
    gained: int
    lost: int
    p_value: float
    difference: float
    interval: paired_stats.Interval
    disagreements: list[int] = field(default_factory=list)


def compare(
    champion: ScoredBundle, challenger: ScoredBundle, photos: Photos, rules: DictConfig
) -> Comparison:
    """Paired statistics: McNemar on the discordant photos, bootstrap of the difference."""
    if champion.manifest.classes != challenger.manifest.classes:
        raise BundleError(
            f"the champion's classes {champion.manifest.classes} differ from the "
            f"challenger's {challenger.manifest.classes}: they cannot be compared"
        )
    old, new = champion.right(photos.labels), challenger.right(photos.labels)
    test = paired_stats.mcnemar_exact(old, new)
    boot = rules.bootstrap
    interval = paired_stats.bootstrap_difference(
        old, new, int(boot.samples), int(boot.seed), float(boot.level)
    )
    disagree = np.flatnonzero(champion.probs.argmax(1) != challenger.probs.argmax(1))
    return Comparison(
        champion=figures(champion, photos.labels, int(rules.ece_bins)),
        challenger=figures(challenger, photos.labels, int(rules.ece_bins)),
        photos=len(photos.labels),
        gained=test.gained,
        lost=test.lost,
        p_value=test.p_value,
        difference=float(new.mean() - old.mean()),
        interval=interval,
        disagreements=[int(i) for i in disagree],
    )


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reasons: list[str]


def guard_violations(c: Comparison, guards: DictConfig) -> list[str]:
    """Each guard the challenger breaks, said in words with its figures."""
    old, new, out = c.champion, c.challenger, []
    for name, was in old["recall"].items():
        now = new["recall"].get(name)
        if was is not None and now is not None and was - now > float(guards.recall_drop):
            out.append(
                f"{name} recall drops {was:.4f} -> {now:.4f}, more than the "
                f"{float(guards.recall_drop):.4f} allowed (promotion.guards.recall_drop)"
            )
    limits = [
        ("log_loss", "log loss", "log_loss_increase", lambda a, b: b - a),
        ("ece", "calibration error (ECE)", "ece_increase", lambda a, b: b - a),
        ("ms_per_photo", "ms per photo", "slowdown", lambda a, b: b / max(a, 1e-9)),
        ("size_bytes", "bundle size", "size_growth", lambda a, b: b / max(a, 1)),
    ]
    for key, words, guard, change in limits:
        allowed = float(guards[guard])
        if change(old[key], new[key]) > allowed:
            out.append(
                f"{words} {old[key]} -> {new[key]}: beyond the {allowed} allowed "
                f"(promotion.guards.{guard})"
            )
    return out


def cheaper(c: Comparison, rules: DictConfig) -> str | None:
    """Why the challenger counts as cheaper at equal accuracy, or None."""
    margin, saving = float(rules.cheaper.equal_accuracy_margin), float(rules.cheaper.min_saving)
    if c.interval.low < -margin:
        return None
    for key, words in (("ms_per_photo", "ms per photo"), ("size_bytes", "bytes")):
        old, new = c.champion[key], c.challenger[key]
        if old and new <= (1 - saving) * old:
            return f"{words} {old} -> {new} (at least {saving:.0%} less)"
    return None


def decide(c: Comparison, rules: DictConfig) -> Decision:
    """accept, refuse or no_change, with the reasons a person reads."""
    if c.champion["bundle_version"] == c.challenger["bundle_version"]:
        return Decision("no_change", ["the challenger is the champion (same bundle version)"])
    alpha = float(rules.alpha)
    stats = (
        f"accuracy {c.champion['accuracy']:.4f} -> {c.challenger['accuracy']:.4f} "
        f"({c.gained} photos gained, {c.lost} lost, McNemar p = {c.p_value:.3g}, "
        f"95 % interval of the difference [{c.interval.low:+.4f}, {c.interval.high:+.4f}])"
    )
    broken = guard_violations(c, rules.guards)
    if broken:
        return Decision("refuse", [*broken, stats])
    if c.p_value < alpha:
        if c.difference > 0:
            return Decision("accept", [f"significantly more accurate at alpha {alpha}: {stats}"])
        return Decision("refuse", [f"significantly less accurate at alpha {alpha}: {stats}"])
    saving = cheaper(c, rules)
    if saving:
        return Decision("accept", [f"cheaper at equal accuracy: {saving}; {stats}"])
    return Decision(
        "refuse",
        [
            f"no significant accuracy change at alpha {alpha} and not cheaper by "
            f"{float(rules.cheaper.min_saving):.0%} (or its interval's low end is below "
            f"-{float(rules.cheaper.equal_accuracy_margin)}): {stats}"
        ],
    )
