"""The package's layers: data flows one way, so every import points down the stack and no module imports itself
back through another. Imports inside functions count too."""

import ast
from pathlib import Path

from conftest import REPO

# Lower layers first. A module may import its own subpackage and any layer below it; layers on one row are
# independent of each other.
LAYERS = [
    ("errors",),
    ("io",),
    ("config", "dist"),
    ("data",),
    ("text",),
    ("model",),
    ("eval",),
    ("train",),
    ("launch", "report"),
    ("bench",),
    ("cli",),
    ("__main__",),
]
RANK = {part: i for i, row in enumerate(LAYERS) for part in row}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from emorec.x import y` may name module y
    return {m for m in out if m == "emorec" or m.startswith("emorec.")}


def graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in (REPO / "emorec").rglob("*.py")}
    return {m: {d for d in _imports(p, m) if d in files and d != m} for m, p in files.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    assert sorted({layer(m) for m in graph()} - set(RANK) - {"__init__"}) == []


def test_imports_point_down_the_layers():
    bad = []
    for module, deps in graph().items():
        for dep in deps:
            a, b = layer(module), layer(dep)
            if b == "__init__" or a == b:
                continue
            if a == "__init__" or RANK[b] >= RANK[a]:
                bad.append(f"{module} -> {dep}")
    assert bad == [], "imports against the layer order (" + " < ".join("/".join(r) for r in LAYERS) + "):\n" + \
        "\n".join(sorted(bad))


def test_nothing_imports_the_command_line():
    assert sorted(m for m, deps in graph().items() if "emorec.cli" in deps and m != "emorec.__main__") == []


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for d in sorted(g[m]):
            if d not in g:
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_readme_names_every_module_in_its_subpackages_row():
    """README's table of the pieces stays true: each module appears in its folder's row."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in text[text.index("## The pieces"):text.index("## Datasets")].splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`emorec/"):
            rows[cells[0].strip("`")] = cells[1]
    missing = []
    for path in sorted((REPO / "emorec").rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        rel = path.relative_to(REPO / "emorec")
        folder = "emorec/" + "".join(f"{p}/" for p in rel.parts[:1] if len(rel.parts) > 1)
        row = rows.get(folder, "")
        name = rel.parts[1] if len(rel.parts) > 2 else path.stem  # a sub-subpackage (scoring/, fixtures/) by its folder
        if f"`{name}" not in row:
            missing.append(str(rel))
    assert missing == [], f"modules the README's table does not name in their folder's row: {missing}"


def test_the_parser_is_built_without_the_training_stack():
    """Every command registers its parser from its subpackage's commands.py; none may import torch, peft,
    transformers or DeepSpeed to do it, so `emorec --help`, `emorec config` or `emorec job status` start at once
    (and so does every Ray Job and Slurm step that only reads a config)."""
    import subprocess
    import sys

    heavy = ("torch", "peft", "transformers", "deepspeed", "sklearn", "ray")
    code = ("import sys; from emorec.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout
