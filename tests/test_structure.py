"""The shape of the package: no import cycle, small modules and functions, one `import caffe`, and
plug-ins named by no module outside their own folders (pure: reads the source, runs nothing)."""
import ast
import re
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "dentcae"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60


def _modules():
    return {".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): f
            for f in sorted(PACKAGE.rglob("*.py"))}


def _imports(name, path, known):
    """The dentcae modules that module `name` imports (from a package, the submodule if there is one)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    done, path = set(), []

    def visit(node):
        if node in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(node):] + [node]))
        if node in done:
            return
        path.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        path.pop()
        done.add(node)

    for name in graph:
        visit(name)
    assert graph["dentcae.config"] <= {"dentcae.schema", "dentcae.runtime.atomic", "dentcae.runtime.yamlio"}
    assert graph["dentcae.schema"] == {"dentcae.registry"}     # the schema asks the registries for their keys
    assert graph["dentcae.registry"] == set()       # the bottom: it finds plug-ins, importing none


def test_modules_and_functions_are_small():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)}: over {MAX_MODULE_LINES} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines"


def test_caffe_is_imported_in_one_place():
    importers = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                 if re.search(r"^\s*(import caffe|from caffe\b)", p.read_text(), re.M)]
    assert importers == ["runtime/backend.py"]


def test_no_module_outside_a_plugin_folder_imports_a_plugin():
    for name, path in _modules().items():
        if name.startswith(("dentcae.heads", "dentcae.pretexts")):
            continue
        imported = _imports(name, path, _modules())
        assert not {m for m in imported if m.startswith(("dentcae.heads", "dentcae.pretexts"))}, name
