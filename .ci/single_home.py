"""Fail when a package reads torch files or loads a state dict strictly in more than its one designated function.

Each package has one home for ``torch.load`` (official ``.pth`` files and the run's own ``.pt`` files, always
``weights_only=True``), at most one for ``torch.jit.load`` (TorchScript archives of third-party weights), and one
for the strict state-dict load (``load_state_dict(..., strict=True)``), where its key and shape comparison
lives. A second copy is found here by walking the sources' syntax trees.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package -> call -> the one function (module:qualified name) allowed to make it
HOMES: dict[str, dict[str, str]] = {
    "bsq_tokenizer": {"torch.load": "io:_torch_load", "strict load_state_dict": "io:_build"},
    "infinity_model": {
        "torch.load": "checkpoint:_torch_load",
        "strict load_state_dict": "checkpoint:_assign",
    },
    "infinity_train": {
        "torch.load": "checkpoint:read_torch_file",
        "torch.jit.load": "vae_losses:TorchScriptPerceptualLoss.__init__",  # a perceptual net: a module, no state dict
        "strict load_state_dict": "checkpoint:load_strict",
    },
    "infinity_data": {},
    "infinity_eval": {
        "torch.load": "_checkpoints:load_official_state_dict",
        "torch.jit.load": "_checkpoints:load_torchscript_state_dict",
        "strict load_state_dict": "_checkpoints:load_state_dict_into_meta_model",
    },
}


def _kind(call: ast.Call) -> str | None:
    name = ast.unparse(call.func)
    if name in ("torch.load", "torch.jit.load"):
        return name
    strict = any(k.arg == "strict" and ast.unparse(k.value) == "True" for k in call.keywords)
    return "strict load_state_dict" if name.endswith("load_state_dict") and strict else None


class _Calls(ast.NodeVisitor):
    """Records ``module:qualified.name`` of every function of one module making one of the watched calls."""

    def __init__(self, module: str, found: dict[str, set[str]]) -> None:
        self.module, self.found = module, found
        self.scope: list[str] = []

    def visit_scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_scope

    def visit_Call(self, node: ast.Call) -> None:
        kind = _kind(node)
        if kind:
            self.found.setdefault(kind, set()).add(f"{self.module}:{'.'.join(self.scope) or '<module>'}")
        self.generic_visit(node)


def homes_found(src: Path) -> dict[str, set[str]]:
    """call kind -> the functions (module:qualified name) of the package under ``src`` that make it."""
    found: dict[str, set[str]] = {}
    for path in sorted(src.rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts)
        _Calls(module, found).visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


def main() -> int:
    problems = []
    for package, homes in HOMES.items():
        src = next(ROOT.glob(f"packages/*/src/{package}"))
        found = homes_found(src)
        for kind in sorted(set(found) | set(homes)):
            want = {homes[kind]} if kind in homes else set()
            if found.get(kind, set()) != want:
                problems.append(
                    f"{package}: {kind} is made in {sorted(found.get(kind, set()))}, expected only in "
                    f"{sorted(want) or 'no function'}; call that function instead of writing a second copy"
                )
    for line in problems:
        print(line)
    print(f"second homes of torch.load / torch.jit.load / strict load_state_dict: {len(problems)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
