"""The package's layers, as its folders show them: a module imports only its own layer or the ones below, and
no import cycle, between modules or between folders, counting the imports inside functions.

    core      errors, console, plan, poll, settings, version, the small shared types
    adapters  one outside system each: Nomad's API and lock, Docker engine and registry, SSH, git, DNS servers
    steps     one area each (image, host, job, store, backup, local, dns, migrate) and the runner
    flows     the tasks that span areas: deploy, release, rollback, takeover, doctor, config
"""
from __future__ import annotations

import ast
import collections
from pathlib import Path

PKG = "mlflow_self_host"
LAYERS = ["core", "adapters", "steps", "flows"]  # low to high: the one table the order is read from
ROOT = Path(__file__).resolve().parents[1] / PKG


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = [PKG, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(mods: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every import of the package's modules, at any depth of the code."""
    found = []
    for name, path in mods.items():
        own_pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = own_pkg.split(".")
                    base = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if base != PKG and not base.startswith(PKG + "."):
                    continue
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base
                    if target != name:
                        found.append((name, target, node.lineno))
            elif isinstance(node, ast.Import):
                found += [(name, a.name, node.lineno) for a in node.names
                          if a.name.startswith(PKG + ".") and a.name != name]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _folder(module: str, mods: dict[str, Path]) -> str:
    """The unit of the folder-level check: the folder holding the module (a package is its own folder), down
    to a layer's area at most (steps/image, adapters/dns); flat modules of a layer are that layer's folder."""
    parts = module.split(".")
    if mods[module].name != "__init__.py":
        parts = parts[:-1]
    return ".".join(parts[:3])


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _where(mods, importer, line):
    return f"{mods[importer].relative_to(ROOT.parent)}:{line}"


def test_every_module_lives_in_a_layer():
    mods = _modules()
    outside = [str(p.relative_to(ROOT.parent)) for m, p in mods.items() if m != PKG and _layer(m) is None]
    assert not outside, f"modules outside the layer folders {'/'.join(LAYERS)}: {', '.join(outside)}"


def test_no_module_imports_a_layer_above_its_own():
    mods = _modules()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for importer, imported, line in _imports(mods):
        a, b = _layer(importer), _layer(imported)
        if a is not None and b is not None and rank[b] > rank[a]:
            upward.append(f"{_where(mods, importer, line)}: {importer} ({a}) imports {imported} ({b})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules():
    mods = _modules()
    edges, lines = collections.defaultdict(set), {}
    for importer, imported, line in _imports(mods):
        edges[importer].add(imported)
        lines.setdefault((importer, imported), line)
    found = _cycles(edges)
    described = [" <-> ".join(c) + ": " + "; ".join(f"{_where(mods, a, lines[a, b])} imports {b}"
                                                     for a in c for b in sorted(edges[a]) if b in c)
                 for c in found]
    assert not found, "module import cycles:\n" + "\n".join(described)


def test_no_import_cycle_between_folders():
    mods = _modules()
    edges, why = collections.defaultdict(set), {}
    for importer, imported, line in _imports(mods):
        a, b = _folder(importer, mods), _folder(imported, mods)
        if a != b:
            edges[a].add(b)
            why.setdefault((a, b), f"{_where(mods, importer, line)} imports {imported}")
    found = _cycles(edges)
    described = [" <-> ".join(c) + ": " + "; ".join(why[a, b] for a in c for b in sorted(edges[a]) if b in c)
                 for c in found]
    assert not found, "folder import cycles:\n" + "\n".join(described)
