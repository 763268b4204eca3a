"""No module under datablame/ imports from a layer above its own, the CLI calls only `api`, and
methods/ holds only registered methods.

The layers, bottom to top (a module may import its own layer and any layer below it):

    datablame/__init__ (version only)
    layout -> errors -> error_paths -> utils -> config -> metrics -> templates -> runs -> demo
    data -> models -> train -> grads -> curvature -> store -> features -> methods -> tabular
    (methods/ holds one file per registered method, named after it; shared code is features/)
    inputs (corpus, trained model, AttributionContext: what every stage below api shares)
    retrieval -> report
    verify | bench | diff | evaluate   (siblings: none imports another)
    api                                 (the only door)
    serve                               (the HTTP service; calls api)
    cli                                 (cli = cli.py and cli_*.py; may start serve)

Every import counts: top-level or inside a function (lazy), `import datablame.x`,
`from datablame.x import y`, `from datablame import x` and relative imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "datablame"

# bottom -> top; a tier of several names holds siblings that may not import each other
LAYERS: list[tuple[str, ...]] = [
    ("__init__",),  # datablame/__init__.py: __version__ only
    ("layout",),  # the run directory's paths; standard library only
    ("errors",),
    ("error_paths",),  # OS/decode/validation errors -> DatablameError naming the file
    ("utils",),
    ("config",),
    ("metrics",),  # ranking metrics against ground truth; numpy only
    ("templates",),  # example configs shipped with the package
    ("runs",),  # run directory bookkeeping (markers, fingerprints)
    ("demo",),  # the demo's preset config
    ("data",),
    ("models",),
    ("train",),
    ("grads",),
    ("curvature",),
    ("store",),
    ("plan",),  # datablame plan's arithmetic, shapes and device calibration
    ("features",),
    ("methods",),
    ("tabular",),  # tables: MLP, linear and tree-ensemble models, their methods and exact LOO
    ("inputs",),  # load_corpus, train, prepare_inputs (re-exported by api)
    ("retrieval",),
    ("report",),  # results, history, comparison and the console/Markdown views
    ("verify", "bench", "diff", "evaluate"),
    ("api",),
    ("serve",),  # the HTTP service over api (datablame serve)
    ("cli",),
]

# what the command line may import: api is the door; besides it, errors, config loading,
# the views of results (report), the example configs and the run directory's paths
CLI_MAY_IMPORT = {"api", "cli", "errors", "error_paths", "config", "report", "templates", "layout", "serve"}

# (importing module, imported module) pairs that point upward, each with its reason; an entry
# whose import is gone fails `test_every_allowlisted_import_still_exists`
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def _unit(module: str) -> str:
    """datablame.verify.lds -> 'verify'; datablame.cli_bench -> 'cli'; datablame -> '__init__'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    top = parts[1]
    if top.startswith("config_"):  # config_evaluate.py: sections of the config, in its layer
        return "config"
    if top.startswith("api_"):  # api_pipeline.py: entry points of the api layer in their own file
        return "api"
    return "cli" if top == "cli" or top.startswith("cli_") else top


RANK = {name: i for i, tier in enumerate(LAYERS) for name in tier}


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _imports(path: Path, root: Path) -> list[tuple[str, int]]:
    """Every datablame module `path` imports (anywhere in the file), with its line."""
    module, is_pkg = _module_name(path, root)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from datablame import api`: the submodule api
                sub = f"{target}.{alias.name}"
                rel = Path(*sub.split("."))
                is_module = (root.parent / rel).is_dir() or (root.parent / rel).with_suffix(".py").is_file()
                out.append((sub if is_module else target, node.lineno))
    return [(t, line) for t, line in out if t == root.name or t.startswith(root.name + ".")]


def violations(root: Path = PACKAGE) -> tuple[list[str], list[str]]:
    """(upward imports, modules whose layer is not listed) under the package at `root`."""
    upward, unplaced = [], set()
    for path in sorted(root.rglob("*.py")):
        module, _ = _module_name(path, root)
        src = _unit(module)
        if src not in RANK:
            unplaced.add(src)
            continue
        for target, line in _imports(path, root):
            dst = _unit(target)
            if dst not in RANK:
                unplaced.add(dst)
                continue
            if dst == src or RANK[dst] < RANK[src]:
                continue
            if (module, target) in ALLOWED_UPWARD:
                continue
            how = "a sibling" if RANK[dst] == RANK[src] else "a higher layer"
            upward.append(f"{path.relative_to(root.parent)}:{line}: {module} ({src}) imports {target} "
                          f"({dst}, {how})")
    return upward, sorted(unplaced)


def test_no_import_points_upward():
    upward, unplaced = violations()
    assert not unplaced, f"place these top-level modules/packages in LAYERS: {unplaced}"
    assert not upward, "imports pointing up the layering:\n" + "\n".join(upward)


def test_every_allowlisted_import_still_exists():
    """An allowlist entry whose import is gone must go too (it would hide a new one)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        module, _ = _module_name(path, PACKAGE)
        found.update((module, t) for t, _ in _imports(path, PACKAGE))
    assert not set(ALLOWED_UPWARD) - found


def test_cli_calls_only_api():
    bad = []
    for path in sorted(PACKAGE.glob("cli*.py")):
        module, _ = _module_name(path, PACKAGE)
        for target, line in _imports(path, PACKAGE):
            if _unit(target) not in CLI_MAY_IMPORT:
                bad.append(f"{path.name}:{line}: {target}")
    assert not bad, f"the CLI may import only {sorted(CLI_MAY_IMPORT)} (route the rest through api):\n" + "\n".join(bad)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from datablame.api import load_corpus\n", "datablame.api"),  # lazy, absolute
    ("from ..methods import base\n", "datablame.methods.base"),  # relative, two levels
    ("import datablame.verify.lds\n", "datablame.verify.lds"),
    ("from datablame import cli\n", "datablame.cli"),  # a submodule named in `from package import`
])
def test_a_planted_upward_import_is_found(tmp_path, source, expected):
    """The check on a synthetic package: an upward import in data/ is reported, a downward one is not."""
    root = tmp_path / "datablame"
    for rel in ("__init__.py", "data/__init__.py", "api.py", "cli.py", "errors.py", "methods/__init__.py",
                "methods/base.py", "verify/__init__.py", "verify/lds.py"):
        _write(root, rel, "")
    _write(root, "data/planted.py", "from datablame.errors import DatablameError\n" + source)
    upward, unplaced = violations(root)
    assert not unplaced
    assert len(upward) == 1 and f"imports {expected} " in upward[0], upward
    _write(root, "data/planted.py", "from datablame.errors import DatablameError\nfrom datablame import __version__\n")
    assert violations(root) == ([], [])


def test_a_sibling_import_and_an_unplaced_package_are_found(tmp_path):
    root = tmp_path / "datablame"
    _write(root, "__init__.py", "")
    _write(root, "bench/__init__.py", "from datablame.verify import lds\n")
    _write(root, "verify/__init__.py", "")
    _write(root, "verify/lds.py", "")
    _write(root, "newpkg/__init__.py", "")
    upward, unplaced = violations(root)
    assert len(upward) == 1 and "a sibling" in upward[0]
    assert unplaced == ["newpkg"]


# methods/ holds methods only: each file registers exactly one method, named like the file
# (`ekfac.py` registers `ekfac`); the protocol (base.py) and the package's registry imports are
# the only other files. Shared machinery lives in datablame/features.
METHODS_NON_METHOD_FILES = {"__init__.py", "base.py"}


def _registered_names(path: Path) -> list[str]:
    """The `name` of every `@register`-decorated class in a file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ClassDef) and any(
            (isinstance(d, ast.Name) and d.id == "register") or (isinstance(d, ast.Attribute) and d.attr == "register")
            for d in node.decorator_list
        ):
            for stmt in node.body:
                if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name" for t in stmt.targets)
                        and isinstance(stmt.value, ast.Constant)):
                    names.append(stmt.value.value)
    return names


def method_file_problems(root: Path = PACKAGE) -> list[str]:
    """Files under methods/ that are not one registered method named like the file, and
    registered methods outside methods/."""
    problems = []
    for path in sorted((root / "methods").glob("*.py")):
        if path.name in METHODS_NON_METHOD_FILES:
            continue
        names = _registered_names(path)
        if names != [path.stem]:
            problems.append(f"methods/{path.name} registers {names or 'nothing'}; a file there registers exactly "
                            f"the method it is named after (shared code belongs in datablame/features)")
    for sub in sorted(p for p in (root / "methods").iterdir() if p.is_dir() and p.name != "__pycache__"):
        problems.append(f"methods/{sub.name}/ is a package; methods/ holds one file per method")
    for path in sorted(root.rglob("*.py")):
        if path.parent != root / "methods" and _registered_names(path):
            problems.append(f"{path.relative_to(root)} registers {_registered_names(path)} outside methods/")
    return problems


def test_methods_holds_only_registered_methods():
    from datablame.methods import REGISTRY

    assert not method_file_problems()
    files = {p.stem for p in (PACKAGE / "methods").glob("*.py")} - {Path(f).stem for f in METHODS_NON_METHOD_FILES}
    assert files == set(REGISTRY), "every registered method has its own file and every method file is registered"


def test_a_helper_module_in_methods_is_found(tmp_path):
    root = tmp_path / "datablame"
    _write(root, "methods/base.py", "")
    _write(root, "methods/bm25.py", "@register\nclass BM25(Method):\n    name = 'bm25'\n")
    assert method_file_problems(root) == []
    _write(root, "methods/text_index.py", "def bm25_index_for(ctx):\n    return None\n")
    _write(root, "methods/grad_align.py", "@register\nclass A(Method):\n    name = 'grad_dot'\n"
                                           "@register\nclass B(Method):\n    name = 'grad_cosine'\n")
    _write(root, "features/odd.py", "@register\nclass C(Method):\n    name = 'odd'\n")
    problems = method_file_problems(root)
    assert len(problems) == 3, problems
    assert any("text_index.py registers nothing" in p for p in problems)
    assert any("grad_align.py registers ['grad_dot', 'grad_cosine']" in p for p in problems)
    assert any("features/odd.py" in p and "outside methods/" in p for p in problems)
