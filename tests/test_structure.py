"""The shape of the package: no import cycle, small modules and functions, one `import caffe`, and
plug-ins named by no module outside their own folders (pure: reads the source, runs nothing)."""
import ast
import re

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "dentcae"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 300, 60


def _modules():
    return {".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): f
            for f in sorted(PACKAGE.rglob("*.py"))}


def _from_imports(name, path):
    """(the absolute module, the names) of every `from ... import` in module `name`."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            yield base, [a.name for a in node.names]


def _imports(name, path, known):
    """The dentcae modules that module `name` imports (from a package, the submodule if there is one)."""
    found = set()
    for base, names in _from_imports(name, path):
        for alias in names:
            found.add(f"{base}.{alias}" if f"{base}.{alias}" in known else base)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
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
    assert graph["dentcae.schema"] == {"dentcae.registry", "dentcae.views", "dentcae.pseudo_settings"}   # plug-ins' keys; views' check
    assert graph["dentcae.registry"] == set()       # the bottom: it finds plug-ins, importing none
    assert graph["dentcae.views"] == set()          # pure geometry of test-time views


# What runs a net forward: nets/infer.py's functions and inference/forward.py's. Only inference/
# turns nets into landmarks; the pre-trainings run their own nets for figures (reconstructions).
FORWARD_NAMES = {"dentcae.nets.infer": {"predict", "run_net", "load_net"},
                 "dentcae.inference.forward": {"caffe_forward", "onnx_forward"}}
MAY_RUN_NETS = ("dentcae.inference", "dentcae.nets.infer", "dentcae.pretexts")


def _forward_imports(name, path):
    found = {f"{base}.{n}" for base, names in _from_imports(name, path) for n in names
             if n in FORWARD_NAMES.get(base, ()) or (base in FORWARD_NAMES and n == "*")}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in FORWARD_NAMES}
    return found


def test_only_inference_runs_a_net_forward_for_landmarks():
    offenders = {name: sorted(found) for name, path in _modules().items() if not name.startswith(MAY_RUN_NETS)
                 for found in [_forward_imports(name, path)] if found}
    assert offenders == {}, f"run nets through dentcae.inference (Detector), not directly: {offenders}"


def test_the_layers_point_down():
    """inference/ lies below evaluation/ and deploy/, above heads/, data/ and nets/."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    for name, deps in graph.items():
        if name.startswith("dentcae.inference"):
            assert not {d for d in deps if d.startswith(("dentcae.evaluation", "dentcae.deploy", "dentcae.tables",
                                                         "dentcae.train", "dentcae.cli"))}, name


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
