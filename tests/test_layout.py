"""The folder layout is the architecture: each layer imports only the layers before it, and every
module's old top-level name still imports as the same module object."""
import ast
import importlib
from pathlib import Path

import pytest

import bitbert
from bitbert._moved import MOVED

# Lowest first. "api" is the package root's own modules (the public names, the old-path table and
# the two old composite modules io and pipeline); the CLI is the only layer above it.
LAYERS = ("core", "quant", "tasks", "training", "deploy", "api", "cli")
API_MODULES = {"__init__", "_moved", "io", "pipeline"}
PACKAGE = Path(bitbert.__file__).parent


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "api"


def _module_name(path: Path) -> tuple[str, str]:
    """(module name, package its relative imports start from)."""
    parts = ("bitbert", *path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def _bitbert_imports(source: str, package: str) -> list[tuple[int, str]]:
    """Every bitbert module a source imports (lazy and type-checking ones too), with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bitbert"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module and node.module.split(".")[0] == "bitbert":
                found.append((node.lineno, node.module))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    top = {p.stem for p in SOURCES if p.parent == PACKAGE}
    assert top == API_MODULES, f"modules at the top of bitbert/ belong in a layer folder: {sorted(top - API_MODULES)}"
    folders = {p.relative_to(PACKAGE).parts[0] for p in SOURCES if p.parent != PACKAGE}
    assert folders <= set(LAYERS), f"folders not in the layer order: {sorted(folders - set(LAYERS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lower_layers_never_import_higher_ones(path):
    module, package = _module_name(path)
    own = LAYERS.index(_layer(module))
    upward = [f"line {line}: {target} ({_layer(target)})" for line, target in _bitbert_imports(path.read_text(), package)
              if LAYERS.index(_layer(target)) > own]
    assert not upward, f"{module} ({_layer(module)}) imports a higher layer: {upward}"


def test_the_check_sees_every_import_form():
    """The rule is not vacuous: relative, absolute, lazy and package imports all resolve to their layer."""
    source = ("from ..training.train import TrainConfig\nfrom ..core import config\nimport bitbert.deploy.engine\n"
              "def f():\n    from .. import pipeline\n    from bitbert.cli import main\n")
    targets = _bitbert_imports(source, "bitbert.quant")
    assert sorted(targets) == [(1, "bitbert.training.train"), (2, "bitbert.core"), (3, "bitbert.deploy.engine"),
                               (5, "bitbert"), (6, "bitbert.cli")]
    assert [_layer(t) for _, t in sorted(targets)] == ["training", "core", "deploy", "api", "cli"]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_import_the_same_module(old):
    new = importlib.import_module(f"bitbert.{MOVED[old]}")
    assert importlib.import_module(f"bitbert.{old}") is new
    assert new.__spec__.name == new.__name__ == f"bitbert.{MOVED[old]}"  # the alias left the module its own name


def test_old_paths_below_a_moved_package_and_from_imports():
    from bitbert import engine, quantizers  # noqa: I001 (the old ``from bitbert import x`` form)
    import bitbert.engine.builder as old_builder
    import bitbert.deploy.engine.builder as builder

    assert old_builder is builder and engine is importlib.import_module("bitbert.deploy.engine")
    assert quantizers is importlib.import_module("bitbert.quant.quantizers")
    with pytest.raises(ModuleNotFoundError, match="bitbert.engine.no_such_module"):
        importlib.import_module("bitbert.engine.no_such_module")


def test_packages_at_their_old_names_export_what_they_did():
    from bitbert.cli import demo_paths, main
    from bitbert.tasks import DataError, _encode_labels, get_task

    app = importlib.import_module("bitbert.cli.app")
    assert (main, demo_paths) == (app.main, app.demo_paths)
    specs = importlib.import_module("bitbert.tasks.specs")
    assert (get_task, DataError, _encode_labels) == (specs.get_task, specs.DataError, specs._encode_labels)
    assert set(importlib.import_module("bitbert.tasks").__all__) == set(specs.__all__)
