"""dvc.yaml names, for each stage, exactly the project code that stage runs.

The import graph (grimp, the engine under import-linter) says which modules a stage's
entry point reaches; a stage that misses one would not re-run when it changes, and one
that names more re-runs for nothing. The failure message says what to add or remove.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "stages", "serving", "monitoring")


def module_file(graph_module: str) -> str:
    path = Path(*graph_module.split("."))
    return str(path / "__init__.py") if (ROOT / path).is_dir() else f"{path}.py"


def code_deps(stage: dict) -> set[str]:
    return {d for d in stage.get("deps", []) if str(d).endswith(".py")}


def imported_code(graph: grimp.ImportGraph, entries: set[str]) -> set[str]:
    modules = set(entries).union(*(graph.find_upstream_modules(e) for e in entries))
    # Package markers hold no code a stage runs; they are left out of dvc.yaml.
    return {module_file(m) for m in modules if not (ROOT / Path(*m.split("."))).is_dir()}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def targets(section: object) -> set[str]:
    """Project modules a config section names with `_target_` (Hydra builds them)."""
    if isinstance(section, dict):
        found = {t.rsplit(".", 1)[0] for k, t in section.items() if k == "_target_"}
        return {m for m in found if m.startswith(PACKAGES)} | {
            m for value in section.values() for m in targets(value)
        }
    return set()


def config_modules(stage: dict) -> set[str]:
    """Code a stage runs by configuration: the `_target_`s of the params it reads, and the
    model's code for a stage that loads the trained checkpoint."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    names = [p for p in stage.get("params", []) if isinstance(p, str)]
    if "${paths.checkpoints}" in stage.get("deps", []):
        names.append("model")
    return {m for name in names for m in targets(params.get(name.split(".")[0]))}


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_exactly_the_code_it_imports(name: str, graph: grimp.ImportGraph) -> None:
    stage = stages()[name]
    entry = stage["cmd"].split("python -m ", 1)[1].split()[0]
    wanted = imported_code(graph, {entry} | config_modules(stage))
    declared = code_deps(stage)
    assert declared == wanted, (
        f"dvc.yaml stage {name}: add {sorted(wanted - declared)}, remove {sorted(declared - wanted)}"
    )
