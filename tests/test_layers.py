"""The architecture holds (docs/architecture.md): planning imports nothing heavy, the packages import only
downwards, modules form no cycle and import no private names of other modules."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first: a package may import only itself, the packages before it and those beside it in its layer. The
# top layer holds the two front ends: the page (web) answers with the command line's helpers, and the command
# line's `fitplan serve` starts the page; test_no_import_cycles keeps their modules from going round in circles.
LAYERS = ["common", "profiles", "planner", "measure", "launch", "benchmarks", ("cli", "web")]


def members(layer: str | tuple[str, ...]) -> tuple[str, ...]:
    return (layer,) if isinstance(layer, str) else layer


PACKAGES = [package for layer in LAYERS for package in members(layer)]


def layer_of(package: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if package in members(layer)), None)


HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "deepspeed", "accelerate", "pynvml", "safetensors",
         "matplotlib", "pandas")

LIGHT = {
    "planning a catalog model": "from planner.api import search, evaluate\n"
                                "from planner.hardware import hardware_from_catalog\n"
                                "from planner.config import TrainConfig\n"
                                "from cli.options import request_from_options\n"
                                "from planner.model_input import resolve_model\n"
                                "m = resolve_model('meta-llama/Llama-2-7b-hf'); hw = hardware_from_catalog('RTX 4090')\n"
                                "search(request_from_options(m, {'nodes': 1}), hw); evaluate(m, TrainConfig(), hw)",
    "the plan, estimate, fits, models, gpus and env commands":
        "import cli.main, cli.commands.plan, cli.commands.estimate, cli.commands.fits, cli.commands.models, "
        "cli.commands.gpus, cli.commands.env, cli.commands.calibrate",
    "the config and launch commands and the runner": "import cli.commands.config, cli.commands.launch, launch.runner, "
                                                    "launch.emit, launch.planfile",
    "exact mode and calibration until they run": "import measure, measure.trace, measure.calibrate",
    "reading training configs (--from)": "from planner.foreign.api import read_files, resolve\n"
                                         "import planner.foreign.load, planner.foreign.axolotl",
    "the timeline and the pictures until they are drawn": "import planner.timeline, planner.serialize, cli.plot",
    "the serve command and the page's API": "import cli.commands.serve, web, web.api, web.browser",
    "reading configs and model folders": "import planner.model_input, profiles.hf_config, profiles.models, "
                                         "profiles.gpus, planner.nvml, planner.hardware",
}


@pytest.mark.parametrize("what", LIGHT)
def test_imports_nothing_heavy(what):
    code = LIGHT[what] + f"\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"{what} imports {done.stdout.strip()}"


def modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = ast.parse(path.read_text(), str(path))
    return out


def imports_of(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every import, at any depth (imports inside functions count too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


MODULES = modules()


def test_packages_import_only_downwards():
    wrong = []
    for name, tree in MODULES.items():
        layer = layer_of(name.split(".")[0])
        for target, _ in imports_of(tree):
            top = layer_of(target.split(".")[0])
            if top is not None and top > layer:
                wrong.append(f"{name} imports {target}")
    assert not wrong


def test_no_private_names_across_modules():
    wrong = [f"{name} imports {target}.{n}" for name, tree in MODULES.items()
             for target, names in imports_of(tree) if target.split(".")[0] in PACKAGES and target != name
             for n in names if n.startswith("_")]
    assert not wrong


def test_no_import_cycles():
    graph = {name: {t for t, _ in imports_of(tree) if t in MODULES and t != name} for name, tree in MODULES.items()}
    for name, names in graph.items():   # `from package import module` names a module too
        for target, imported in imports_of(MODULES[name]):
            names |= {f"{target}.{n}" for n in imported if f"{target}.{n}" in MODULES}
    seen, stack = set(), []

    def visit(node: str) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in seen:
            return
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()
        seen.add(node)

    for node in sorted(graph):
        visit(node)


def module_aliases(name: str, tree: ast.Module) -> dict[str, str]:
    """Local names bound to fitplan modules: `import planner.gemm as gemm`, `from planner import gemm`."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name: a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                        if f"{node.module}.{a.name}" in MODULES}
    return aliases


def test_no_private_attributes_of_other_modules():
    """`gemm._gemm_seconds` reaches past a module's public names as much as importing it would."""
    wrong = []
    for name, tree in MODULES.items():
        aliases = module_aliases(name, tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and aliases.get(node.value.id, name) != name):
                wrong.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not wrong


def bound_names(tree: ast.Module) -> set[str]:
    """The names a module defines or imports at its top level."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def test_imports_name_what_exists():
    """An import of a module that moved (benchmarks.harness is measure.harness) fails only when it runs."""
    wrong = []
    for name, tree in MODULES.items():
        for target, names in imports_of(tree):
            if target.split(".")[0] not in PACKAGES:
                continue
            if target not in MODULES:
                wrong.append(f"{name} imports {target}")
                continue
            defined = bound_names(MODULES[target])
            wrong += [f"{name} imports {target}.{n}" for n in names
                      if n != "*" and n not in defined and f"{target}.{n}" not in MODULES]
    assert not wrong


MAX_FUNCTION_LINES = 40   # not counting the docstring (a command's is its --help)


def test_functions_are_short():
    long = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if ast.get_docstring(node) is not None:
                    lines -= node.body[0].end_lineno - node.body[0].lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def test_architecture_names_what_exists():
    """Every path docs/architecture.md names exists, and every name in a row of "Where a change goes" is
    defined in one of the files that row names."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    quoted = re.findall(r"`([^`]+)`", text)
    paths = {q for q in quoted if re.fullmatch(r"[a-z_]+(/[a-z_0-9]+)*(\.py|/)", q)}
    assert paths and not [p for p in paths if not (ROOT / p).exists()]
    rows = [line for line in text.split("## Where a change goes")[1].split("\n## ")[0].splitlines()
            if line.startswith("| a")]
    kinds = {row.split("|")[1].strip() for row in rows}
    assert {"a GPU", "an optimizer", "a model family", "an attention kernel", "a sharding engine"} <= kinds
    missing = []
    for row in rows:
        names = re.findall(r"`([^`]+)`", row)
        files = [ROOT / n for n in names if n.endswith(".py")]
        for n in names:
            word = re.sub(r"\(.*", "", n)
            command = (ROOT / "cli" / "commands" / f"{word}.py").exists()   # `fits`: the command
            if not n.endswith((".py", "/")) and re.fullmatch(r"\w+", word) and not command and not any(
                    re.search(rf"\b{re.escape(word)}\b", f.read_text(encoding="utf-8")) for f in files):
                missing.append(f"{row.split('|')[1].strip()}: {n}")
    assert not missing


def test_documents_point_inside_the_repository():
    """The contract is in docs/: no document or module sends the reader to files outside the repository."""
    outside = re.compile(r"/work/|\.\./shared|(?<![\w./])design/")
    files = [*ROOT.glob("*.md"), *(ROOT / "docs").rglob("*.md"),
             *(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))]
    wrong = [f"{path.relative_to(ROOT)}:{i}" for path in files
             for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert not wrong
