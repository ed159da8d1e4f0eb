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


def _dynamic_imports(tree, known):
    """dentcae modules named in importlib.import_module / __import__ calls (a lazy import is an
    import: the registry, or anything else, cannot hide an edge this way)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            text = ast.unparse(node.args[0]) if node.args else ""
            found |= {m for m in known if m.rsplit(".", 1)[-1] in text or m in text}
            found.add("dynamic import")
    return found


def _imports(name, path, known):
    """The dentcae modules that module `name` imports (from a package, the submodule if there is one),
    at the top or inside functions, statically or through importlib."""
    found = set()
    for base, names in _from_imports(name, path):
        for alias in names:
            found.add(f"{base}.{alias}" if f"{base}.{alias}" in known else base)
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    found |= _dynamic_imports(tree, known)
    return {m for m in found if (m in known or m == "dynamic import") and m != name}


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


# The floors of docs/architecture.md, bottom to top: a module imports only from its own floor or below.
FLOORS = [("runtime", "registry", "views", "pseudo_settings", "figures", "version"), ("schema",), ("config",),
          ("data",), ("nets", "codecs"), ("heads", "pretexts"), ("train",), ("inference",), ("evaluation",),
          ("deploy", "unlabelled"), ("annotation",), ("tables",), ("plugins", "cli")]


def _floor(module):
    if module == "dentcae":
        return len(FLOORS)                      # the package itself: it imports plugins
    part = module.split(".")[1]
    return next(i for i, names in enumerate(FLOORS) if part in names)


def upward_imports(graph):
    return sorted((m, d) for m, deps in graph.items() for d in deps
                  if d != "dynamic import" and _floor(d) > _floor(m))


def find_cycle(graph):
    """The first import cycle found (a list of modules, first = last), or None."""
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for name in sorted(graph):
        found = visit(name)
        if found:
            return found
    return None


def test_the_import_graph_has_no_cycle_and_no_lazy_import():
    graph = _graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    assert not [m for m, deps in graph.items() if "dynamic import" in deps], "importlib in the package"
    assert graph["dentcae.config"] <= {"dentcae.schema", "dentcae.runtime.atomic", "dentcae.runtime.yamlio"}
    assert graph["dentcae.schema"] == {"dentcae.registry", "dentcae.views", "dentcae.pseudo_settings"}   # plug-ins' keys; views' check
    assert graph["dentcae.registry"] == set()       # the bottom: plug-ins register into it, it imports none
    assert graph["dentcae.views"] == set()          # pure geometry of test-time views


def test_every_import_points_down_the_documented_floors():
    assert upward_imports(_graph()) == []
    documented = (ROOT / "docs/architecture.md").read_text()
    for names in FLOORS:
        for part in names:
            assert f"`{part}`" in documented, f"docs/architecture.md's layer order does not name {part}"


def test_the_checks_catch_a_planted_cycle_through_the_registry_and_a_planted_upward_import():
    graph = _graph()
    planted = {**graph, "dentcae.registry": {"dentcae.heads.heatmap.refine"}}    # a registry importing a plug-in
    cycle = find_cycle(planted)
    assert cycle and "dentcae.registry" in cycle and "dentcae.data.prepare" in cycle, cycle
    assert upward_imports(planted) == [("dentcae.registry", "dentcae.heads.heatmap.refine")]
    upward = {**graph, "dentcae.data.splits": graph["dentcae.data.splits"] | {"dentcae.train.loop"}}
    assert ("dentcae.data.splits", "dentcae.train.loop") in upward_imports(upward)
    lazy = ast.parse("def get(name):\n    return importlib.import_module(f'dentcae.heads.{name}')\n")
    assert "dynamic import" in _dynamic_imports(lazy, set(_modules()))


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
        if name.startswith(("dentcae.heads", "dentcae.pretexts", "dentcae.plugins")):
            continue
        imported = _imports(name, path, _modules())
        assert not {m for m in imported if m.startswith(("dentcae.heads", "dentcae.pretexts"))}, name
