"""Fail when a package of the workspace imports a private name or module of another package.

import-linter (configured in the root pyproject.toml) enforces the arrows between packages and keeps other
packages to each package's public modules, but sees modules, not names; this check adds the names:
``from other_pkg.mod import _helper``, ``import other_pkg._mod``, and ``from other_pkg import name`` where the name
is not in the package's ``__all__`` (its front door) nor one of its modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"bsq_tokenizer", "infinity_model", "infinity_train", "infinity_data", "infinity_eval"}


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def front_door(package: str) -> set[str]:
    """``__all__`` of a package's ``__init__.py`` plus its submodule names, read without importing it."""
    init = next(ROOT.glob(f"packages/*/src/{package}/__init__.py"))
    names = {p.stem for p in init.parent.glob("*.py")} | {p.name for p in init.parent.iterdir() if p.is_dir()}
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            names |= set(ast.literal_eval(node.value))
    return names | {"__version__"}


FRONT_DOORS = {package: front_door(package) for package in PACKAGES}


def violations(path: Path, owner: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules, names = [node.module], [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            modules, names = [alias.name for alias in node.names], []
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] not in PACKAGES or parts[0] == owner:
                continue
            bad = [p for p in parts[1:] if _private(p)] + [n for n in names if _private(n)]
            if len(parts) == 1:  # names off the front door (deprecated there) are imported from their module
                bad += [n for n in names if not _private(n) and n not in FRONT_DOORS[module]]
            if bad:
                found.append(
                    f"{path.relative_to(ROOT)}:{node.lineno}: imports {', '.join(bad)} from {module}"
                )
    return found


def main() -> int:
    problems = []
    for path in sorted(ROOT.glob("packages/*/src/*/**/*.py")):
        owner = path.relative_to(ROOT).parts[3]
        problems += violations(path, owner)
    for folder in ("benchmarks", "recipes", "examples"):  # they use the packages as a user would
        for path in sorted((ROOT / folder).glob("**/*.py")):
            problems += violations(path, owner="")
    for line in problems:
        print(line)
    print(f"private imports across packages: {len(problems)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
