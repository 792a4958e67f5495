"""Does a fresh run reproduce the committed metrics? `python -m stages.reproduction`.

Compares every number in metrics/*.json of the working tree with the same file at a git
revision (HEAD by default), within metrics/tolerances.yaml, and names the environment
fingerprint fields (metrics/train.json) that differ between the two runs. When the
fingerprints are equal the runs must agree exactly (timings aside): same machine, same
numbers. Exit status 0 when everything is within tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from contracts.bundle import Environment

METRIC_FILES = ("prepare.json", "train.json", "evaluate.json", "review_labels.json", "export.json")


@dataclass(frozen=True)
class Tolerance:
    pattern: str
    width: float | None  # None: not compared (timings)


@dataclass(frozen=True)
class Comparison:
    metric: str
    committed: float
    fresh: float
    allowed: float

    @property
    def within(self) -> bool:
        return abs(self.fresh - self.committed) <= self.allowed + 1e-12


def load_tolerances(path: Path) -> list[Tolerance]:
    rules = yaml.safe_load(path.read_text())["tolerances"]
    return [Tolerance(r["metric"], None if r.get("ignore") else float(r["abs"])) for r in rules]


def tolerance_for(metric: str, rules: list[Tolerance]) -> float | None:
    for rule in rules:
        if fnmatch.fnmatchcase(metric, rule.pattern):
            return rule.width
    raise SystemExit(f"metrics/tolerances.yaml has no rule for {metric}: add one")


def numbers(tree: object, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a metrics file as {'a.b': value} (strings and the fingerprint out)."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            if key != "environment":
                out.update(numbers(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, bool) or not isinstance(tree, int | float):
        return {}
    return {prefix[:-1]: float(tree)}


def committed_file(revision: str, path: Path) -> dict:
    shown = subprocess.run(
        ["git", "show", f"{revision}:{path.as_posix()}"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise SystemExit(f"{path} is not committed at {revision}: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def environment(report: dict) -> Environment | None:
    recorded = report.get("environment")
    return Environment.model_validate(recorded) if recorded else None


def compare(
    metrics_dir: Path, revision: str, rules: list[Tolerance], exact: bool
) -> list[Comparison]:
    """Every compared number of every metrics file; `exact` allows no difference at all."""
    rows = []
    for name in METRIC_FILES:
        fresh = numbers(json.loads((metrics_dir / name).read_text()))
        committed = numbers(committed_file(revision, metrics_dir / name))
        for metric in sorted(set(fresh) | set(committed)):
            width = tolerance_for(f"{name}:{metric}", rules)
            if width is None:
                continue
            before, after = committed.get(metric, float("nan")), fresh.get(metric, float("nan"))
            rows.append(Comparison(f"{name}:{metric}", before, after, 0.0 if exact else width))
    return rows


def fingerprint_differences(metrics_dir: Path, revision: str) -> tuple[list[str], str]:
    """Fingerprint fields that differ, and a line describing both runs."""
    fresh = environment(json.loads((metrics_dir / "train.json").read_text()))
    committed = environment(committed_file(revision, metrics_dir / "train.json"))
    if fresh is None or committed is None:
        return ["(no fingerprint recorded)"], "one of the runs recorded no environment"
    differing = committed.differences(fresh)
    line = ", ".join(f"{f}: {getattr(committed, f)} -> {getattr(fresh, f)}" for f in differing)
    return differing, line or "identical environments"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="HEAD", help="git revision of the committed metrics")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--tolerances", type=Path, default=Path("metrics/tolerances.yaml"))
    args = parser.parse_args(argv)
    differing, described = fingerprint_differences(args.metrics, args.against)
    exact = not differing
    rows = compare(args.metrics, args.against, load_tolerances(args.tolerances), exact)
    print(f"environment ({args.against} -> working tree): {described}")
    print("mode: exact (same fingerprint)" if exact else "mode: within metrics/tolerances.yaml")
    outside = [row for row in rows if not row.within]
    for row in outside:
        print(
            f"  OUTSIDE {row.metric}: {row.committed:g} -> {row.fresh:g} "
            f"(|diff| {abs(row.fresh - row.committed):.6g} > {row.allowed:g})"
        )
    print(f"{len(rows) - len(outside)} of {len(rows)} figures reproduce")
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
