"""The package's import graph runs one way (DESIGN.md): no module imports a layer above its own.

Every ``import``/``from`` statement of every module under ``jaxeit/`` is read
from its syntax tree, function-local (lazy) imports included, and resolved to
the top-level part of the package it names (``jaxeit.recon.inr.fit`` →
``recon``). An import of a higher layer fails the test with the offending
file and line, and so does a function-local import of another part of the
package (a hidden dependency; only the command line defers its imports, to
start fast, and the utilities of the lowest layer, which import nothing of
the package, may be imported anywhere).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxeit"

#: layers, lowest first: a module may import its own layer and those below it, never one above
LAYERS = [
    {"content_hash", "io_utils", "machine", "parallel", "signals", "progress", "compilation_cache", "training"},  # utilities
    {"mesh", "protocol"},
    {"forward", "grid", "noise", "metrics", "io", "phantoms"},
    {"priors"},  # the diffusion prior (a network and its sampler) that Diff-INR uses
    {"recon"},  # every reconstruction method and the registry
    {"data", "dgm", "plot"},  # simulated data sets (their GN images), learned models, figures
    {"realdata"},  # real-data pipelines: calling recon, never defining methods
    {"cli"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _part(module_file: Path) -> str:
    rel = module_file.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _function_local_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the import statements inside functions."""
    lines = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines |= {n.lineno for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def _imported_parts(tree: ast.AST, module_file: Path):
    """(line, imported top-level part of jaxeit) for each import of a jaxeit module in ``tree``."""
    pkg = module_file.relative_to(ROOT.parent).with_suffix("").parts[:-1]  # ("jaxeit", "recon", ...)
    if module_file.name == "__init__.py":
        pkg = module_file.relative_to(ROOT.parent).parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "jaxeit" and len(parts) > 1:
                    yield node.lineno, parts[1]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if not target or target[0] != "jaxeit":
                continue
            if len(target) > 1:
                yield node.lineno, target[1]
            else:  # from jaxeit import x, y / from . import x (at the top level)
                for alias in node.names:
                    # a name re-exported by the package's __init__ (e.g. ForwardModel) goes through the
                    # public face, which imports every layer: only the top layer may do that
                    yield node.lineno, alias.name if alias.name in RANK else "cli"


def _violations():
    out, unknown = [], set()
    for f in sorted(ROOT.rglob("*.py")):
        if f.parent == ROOT and f.name == "__init__.py":
            continue  # the package's public face re-exports from every layer
        own = _part(f)
        tree = ast.parse(f.read_text(), str(f))
        lazy = _function_local_lines(tree)
        for line, part in _imported_parts(tree, f):
            if part not in RANK or own not in RANK:
                unknown.add(part if part not in RANK else own)
                continue
            if RANK[part] > RANK[own]:
                out.append(f"{f.relative_to(ROOT.parent)}:{line} ({own}) imports {part}, a layer above it")
            elif line in lazy and part != own and own != "cli" and RANK[part] > 0:
                out.append(f"{f.relative_to(ROOT.parent)}:{line} ({own}) imports {part} inside a function: "
                           "move it to the top of the module")
    return out, unknown


def test_every_part_of_the_package_has_a_layer():
    parts = {p.name.removesuffix(".py") for p in ROOT.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts <= set(RANK), f"give these a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_no_upward_imports():
    bad, unknown = _violations()
    assert not unknown, f"imports of parts without a layer: {sorted(unknown)}"
    assert not bad, "upward or lazy cross-layer imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, part", [
    ("from ..realdata.imaging import prepare\n", "realdata"),                       # relative, two levels
    ("def f():\n    from jaxeit.cli import main\n", "cli"),                         # function-local, absolute
    ("import jaxeit.data.simulate as s\n", "data"),
])
def test_the_checker_sees_relative_lazy_and_absolute_imports(source, part):
    fake = ROOT / "recon" / "classical.py"
    found = [p for _, p in _imported_parts(ast.parse(source), fake)]
    assert found == [part]
    assert RANK[part] > RANK["recon"]  # so each of these in recon/ would be reported
