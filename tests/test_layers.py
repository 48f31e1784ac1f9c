"""Imports only point down: each part of crome_ray imports its own modules and the floors below
it, never one above (the ground floor knows no job; the oracle knows nothing of the
augmentation; training knows nothing of the augmentation or the evaluation)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "crome_ray"
FLOORS = [
    {"quiet", "progress"},  # the terminal: what any floor may print through
    {"errors", "heap", "text_similarity", "records", "ray_runtime", "cue"},
    {"config", "secrets"},
    {"storage"},
    {"runs", "models"},
    {"data"},
    {"oracle"},
    {"train"},
    {"augment", "evaluate"},  # the augmentation's baseline filter scores with train.score
    {"tune"},
    {"pipeline"},
    {"job_configs", "summaries", "console"},
    {"cli_tools"},
    {"cli"},
]
FLOOR = {part: i for i, parts in enumerate(FLOORS) for part in parts}


def part_of(module: str) -> str:
    """``crome_ray.oracle.job`` -> ``oracle``; ``crome_ray.cli`` -> ``cli``."""
    return module.split(".")[1]


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("crome_ray"):
            if node.module == "crome_ray":
                found += [f"crome_ray.{a.name}" for a in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("crome_ray.")]
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_part_of_the_package_has_a_floor():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES}
    assert parts == set(FLOOR), parts ^ set(FLOOR)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_its_own_part_and_the_floors_below(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = [m for m in imports(path) if part_of(m) != own and FLOOR[part_of(m)] >= FLOOR[own]]
    assert not upward, f"{own} (floor {FLOOR[own]}) imports {upward}"


def test_the_check_sees_an_import_that_runs_up_a_floor(tmp_path):
    bad = tmp_path / "job.py"
    bad.write_text("def f():\n    from crome_ray.augment.leakage import unigram_f1\n")
    assert imports(bad) == ["crome_ray.augment.leakage"]
    assert FLOOR[part_of(imports(bad)[0])] > FLOOR["oracle"]  # what the oracle once did
