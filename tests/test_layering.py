"""The package's layering, read statically from the import statements of every module (those
inside functions too): imports run one way, from a higher layer to the same or a lower one, and
there is no import cycle between modules or between packages.

The layers are declared here, once (the README's "Where things are" table follows them)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: bottom to top; a module belongs to the first entry that names it or a package above it
LAYERS: list[tuple[str, ...]] = [
    ("scnf.errors", "scnf.config", "scnf.protocol", "scnf.noise", "scnf.fileio"),  # contracts
    ("scnf.nn",),                                # coupling networks
    ("scnf.bijectors",),                         # invertible layers
    ("scnf.models",),                            # flows, priors, VAEs, builders, released model
    ("scnf.data",),                              # data sources, files, the semi-supervised data
    ("scnf.training",),                          # trainer, objective, evaluation, checkpoints
    ("scnf.runs",),                              # run directories, reports, reproductions
    ("scnf.analysis", "scnf.estimator"),         # the paper's analyses, the scikit-learn estimator
    ("scnf.cli", "scnf.__main__", "scnf"),       # front-ends and the package's face
]


def modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for p in sorted((src / "scnf").rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The scnf modules that module ``name`` imports (anywhere in it)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from package import module" imports the module; "from module import name" the module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # "import scnf.x.y" of a name inside a module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph(src: Path = SRC) -> dict[str, set[str]]:
    mods = modules(src)
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def layer_of(module: str, layers=LAYERS) -> int:
    for i, names in enumerate(layers):
        for n in names:
            if module == n or (n != "scnf" and module.startswith(n + ".")):
                return i
    raise KeyError(f"{module} is in no declared layer: add it to LAYERS")


def upward(g: dict[str, set[str]], layers=LAYERS) -> list[tuple[str, str]]:
    """Imports from a lower layer to a higher one."""
    return sorted((a, b) for a, deps in g.items() for b in deps if layer_of(b, layers) > layer_of(a, layers))


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def package_of(module: str, packages: set[str]) -> str:
    """The innermost package holding ``module`` (a package's __init__ belongs to the package above)."""
    parent = module.rpartition(".")[0]
    while parent and parent not in packages:
        parent = parent.rpartition(".")[0]
    return parent or module


def package_graph(g: dict[str, set[str]], src: Path = SRC) -> dict[str, set[str]]:
    pkgs = {m for m, p in modules(src).items() if p.name == "__init__.py"}
    out: dict[str, set[str]] = {}
    for a, deps in g.items():
        pa = package_of(a, pkgs)
        for b in deps:
            pb = package_of(b, pkgs)
            if pa != pb and pa != "scnf" and pb != "scnf":  # the package's face imports everything
                out.setdefault(pa, set()).add(pb)
    return out


def longest_chain(g: dict[str, set[str]]) -> list[str]:
    """The longest import chain (the graph has no cycle)."""
    memo: dict[str, list[str]] = {}

    def from_(v):
        if v not in memo:
            memo[v] = [v] + max((from_(w) for w in g.get(v, ())), key=len, default=[])
        return memo[v]

    return max((from_(v) for v in g), key=len)


def test_every_module_is_in_a_declared_layer():
    for m in graph():
        layer_of(m)


def test_imports_run_from_higher_layers_to_lower_ones():
    assert upward(graph()) == []


def test_no_import_cycle_between_modules_or_packages():
    g = graph()
    assert cycles(g) == []
    assert cycles(package_graph(g)) == []


def test_at_most_ten_modules_stand_directly_in_the_package():
    assert len(list((SRC / "scnf").glob("*.py"))) <= 10


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The checks fail for what they are named after: a model importing a run, and two modules
    importing each other, planted in a copy of the package."""
    import shutil

    shutil.copytree(SRC / "scnf", tmp_path / "scnf")
    flow = tmp_path / "scnf" / "models" / "flow.py"
    flow.write_text(flow.read_text() + "\n\ndef _planted():\n    from ..runs.run import load_run\n")
    g = graph(tmp_path)
    assert ("scnf.models.flow", "scnf.runs.run") in upward(g)
    noise = tmp_path / "scnf" / "noise.py"
    noise.write_text(noise.read_text() + "\nfrom . import fileio\n")
    fileio = tmp_path / "scnf" / "fileio.py"
    fileio.write_text(fileio.read_text() + "\nfrom .noise import seed_everything\n")
    assert ["scnf.fileio", "scnf.noise"] in cycles(graph(tmp_path))


@pytest.mark.parametrize("layers", [LAYERS])
def test_a_module_outside_the_declared_layers_is_named(layers):
    with pytest.raises(KeyError, match="scnf.newthing"):
        layer_of("scnf.newthing.x", layers[:-1])


def test_the_readme_table_of_where_things_are_matches_the_tree():
    """Every module is named in the README's "Where things are" table, and every name there exists."""
    import re

    readme = (SRC.parent / "README.md").read_text()
    table = readme.split("### Where things are (`src/scnf/`)")[1].split("\n## ")[0].split("\n### ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = set()
    for row in rows:
        where, what = row.split(" | ")[0], row.split(" | ", 1)[1]
        folders = re.findall(r"`(\w+)/`", where)
        tops = re.findall(r"`(\w+\.py)`", where)
        named |= set(tops)
        for folder in folders:
            for f in re.findall(r"`(\w+\.py)`", what):
                named.add(f"{folder}/{f}")
    tree = {str(p.relative_to(SRC / "scnf")) for p in (SRC / "scnf").rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}
    # a folder's modules are named in its row, by their file name
    assert tree - named == set(), f"modules missing from the README table: {sorted(tree - named)}"
    assert named - tree == set(), f"the README names modules that do not exist: {sorted(named - tree)}"
