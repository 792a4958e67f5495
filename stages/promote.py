"""The promotion gate: should this challenger replace the champion? (docs/lifecycle.md)

    python -m stages.promote CHALLENGER [--champion CHAMPION] [--extra-photos DIR]
                             [--with-validation] [--dry-run]

CHALLENGER and CHAMPION are bundle folders or git revisions / DVC experiment names, whose
bundle (paths.export) is materialised with `dvc get`. The champion defaults to `main`:
the bundle main's dvc.lock names. Both are scored on the test split (plus the validation
split with --with-validation, and the labelled photos in DIR/<class>/), compared with paired statistics and judged by params.yaml's
`promotion` rules. Writes metrics/promotion.json and plots/promotion/report.md; on
acceptance (unless --dry-run) registers the challenger, moves the alias `champion`,
writes models/registry.json and appends to docs/promotions.md. Exit status: 0 accepted
or no change, 1 refused, 2 bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from contracts.bundle import BundleError, BundleManifest
from contracts.imaging import ImageError, load
from contracts.registry import OVERRIDE_PREFIX, REGISTRY_FILE
from stages import promotion, promotion_report, registry
from stages.model_card import test_names
from stages.params import Paths, load_params, repo_root

AUDIT = Path("docs/promotions.md")
REPORT = Path("plots/promotion/report.md")


def materialise(ref: str, paths: Paths) -> Path:
    """A bundle folder as is; otherwise the bundle at git revision / experiment `ref`."""
    if Path(ref).is_dir():
        return Path(ref)
    out = Path(tempfile.mkdtemp(prefix="promote-")) / "bundle"
    done = subprocess.run(
        ["dvc", "get", str(repo_root()), str(paths.export), "--rev", ref, "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BundleError(
            f"{ref!r} is neither a bundle folder nor a revision whose bundle `dvc get` "
            f"can fetch ({done.stderr.strip()[-300:]}); pass a folder, e.g. --champion DIR"
        )
    return out


def test_photos(paths: Paths, split: str = "test") -> promotion.Photos:
    """A prepared split (test unless told), each photo named by its file in the manifest."""
    images = np.load(paths.split_images(split), mmap_mode="r")
    labels = np.load(paths.split_labels(split))
    names = test_names(paths.manifest, len(labels), split)
    return promotion.Photos(np.asarray(images), labels, names)


def extra_photos(folder: Path, classes: list[str], size: int) -> promotion.Photos:
    """Labelled photos in folder/<class>/ through the image contract; unreadable ones stop
    the gate with their name (a silent skip would change what is compared)."""
    images, labels, names = [], [], []
    for index, name in enumerate(classes):
        for path in sorted((folder / name).glob("*")):
            try:
                images.append(load(path.read_bytes(), size))
            except ImageError as error:
                raise BundleError(f"{path} is not a usable photo: {error}") from error
            labels.append(index)
            names.append(str(path.relative_to(folder)))
    if not images:
        raise BundleError(f"no photos in {folder}/<class>/ for classes {classes}")
    return promotion.Photos(np.stack(images), np.asarray(labels), names)


def joined(a: promotion.Photos, b: promotion.Photos | None) -> promotion.Photos:
    if b is None:
        return a
    return promotion.Photos(
        np.concatenate([a.images, b.images]),
        np.concatenate([a.labels, b.labels]),
        a.names + b.names,
    )


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.promote", description=__doc__)
    parser.add_argument("challenger", help="bundle folder, git revision or experiment name")
    parser.add_argument("--champion", default="main", help="bundle folder or revision (main)")
    parser.add_argument("--extra-photos", type=Path, help="more labelled photos: DIR/<class>/")
    parser.add_argument(
        "--with-validation",
        action="store_true",
        help="also score the validation split: twice the photos for comparing recipes (both "
        "bundles' training picked its epoch and temperature on it)",
    )
    parser.add_argument("--dry-run", action="store_true", help="decide only: register nothing")
    parser.add_argument("--output", type=Path, help="JSON (default metrics/promotion.json)")
    parser.add_argument("--report", type=Path, default=REPORT, help=f"markdown ({REPORT})")
    parser.add_argument("--audit", type=Path, default=AUDIT, help=f"audit trail ({AUDIT})")
    parser.add_argument(
        "--override",
        metavar="REASON",
        help="promote a refused challenger anyway: a person's reason, kept with the gate's "
        "refusal in registry.json and the audit trail",
    )
    return parser.parse_args(argv)


def judge(args: argparse.Namespace, params, paths: Paths):
    """Score both bundles on the same photos, compare, decide, write the report."""
    rules = params.promotion
    champion_dir = materialise(args.champion, paths)
    challenger_dir = materialise(args.challenger, paths)
    photos = test_photos(paths)
    if args.with_validation:
        photos = joined(photos, test_photos(paths, "val"))
    if args.extra_photos:
        classes = BundleManifest.read(challenger_dir).classes
        photos = joined(photos, extra_photos(args.extra_photos, classes, photos.images.shape[1]))
    champion = promotion.score_bundle("champion", champion_dir, photos, rules.timing)
    challenger = promotion.score_bundle("challenger", challenger_dir, photos, rules.timing)
    comparison = promotion.compare(champion, challenger, photos, rules)
    decision = promotion.decide(comparison, rules)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    promotion_report.draw_disagreements(
        comparison,
        photos,
        (challenger.manifest.classes, champion.probs, challenger.probs),
        args.report.with_name("disagreements.png"),
        int(rules.gallery_size),
    )
    output = args.output or paths.metrics / "promotion.json"
    promotion_report.write(output, args.report, comparison, decision)
    return challenger, photos, decision, output


def promote(challenger, photos: promotion.Photos, reason: str, args, params, paths: Paths) -> str:
    """Register the challenger, move the alias, leave the record and the audit row."""
    manifest = challenger.manifest
    tags = {
        "bundle_version": manifest.version,
        "data_version": manifest.data_version,
        "git_revision": manifest.git_revision,
        "precision": manifest.precision,
        "params_sha256": hashlib.sha256(Path("params.yaml").read_bytes()).hexdigest(),
        "promotion_reason": reason[:4900],
        **{f"metric.{k}": str(v) for k, v in manifest.metrics.items()},
    }
    version = registry.register(challenger, photos.images, tags, str(params.tracking.experiment))
    rec = registry.record(challenger, version, reason)
    paths.export.parent.mkdir(parents=True, exist_ok=True)
    rec.write(paths.export.parent)
    registry.append_audit(args.audit, "override" if args.override else "promote", rec)
    return version


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    params = load_params()
    paths = Paths.from_params(params)
    try:
        challenger, photos, decision, output = judge(args, params, paths)
    except BundleError as error:
        print(f"promote: {error}", file=sys.stderr)
        return 2
    print(args.report.read_text())
    print(f"promote: wrote {output} and {args.report}")
    reason = promotion_reason(decision, args.override)
    if reason and not args.dry_run:
        version = promote(challenger, photos, reason, args, params, paths)
        print(
            f"promote: registered {challenger.manifest.version} as version {version}, alias "
            f"champion moved; {paths.export.parent / REGISTRY_FILE}, {args.audit}"
        )
    return 1 if decision.outcome == "refuse" and not reason else 0


def promotion_reason(decision, override: str | None) -> str | None:
    """Why the challenger is promoted, or None: the gate's reason when it accepts; a
    person's override of a refusal, kept beside the refusal so nobody mistakes it."""
    if decision.outcome == "accept":
        return decision.reasons[0]
    if decision.outcome == "refuse" and override:
        return f"{OVERRIDE_PREFIX}: {override} (the gate refused: {decision.reasons[0]})"
    return None


if __name__ == "__main__":
    sys.exit(main())
