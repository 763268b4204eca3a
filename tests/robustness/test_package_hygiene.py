"""Static checks over the package source: nothing unpickles, nothing swallows errors silently.

These walk every module under datablame/ with `ast`, so a new loader or a new bare
`except Exception: pass` anywhere in the package fails the suite, not only the ones fixed
when the issue was filed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "datablame"
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _findings(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve") for n in names):
                out.append(f"{rel}:{node.lineno} imports a pickle-like module")
        if isinstance(node, ast.ExceptHandler):
            broad = node.type is None or (_dotted(node.type) in ("Exception", "BaseException"))
            if broad and all(isinstance(s, ast.Pass) for s in node.body):
                out.append(f"{rel}:{node.lineno} swallows every exception with `pass`")
    for call in _calls(tree):
        name = _dotted(call.func)
        if name.endswith("torch.load") and not _is_true(_kw(call, "weights_only")):
            out.append(f"{rel}:{call.lineno} torch.load without weights_only=True")
        if _is_true(_kw(call, "allow_pickle")):
            out.append(f"{rel}:{call.lineno} allow_pickle=True")
        if _is_true(_kw(call, "trust_remote_code")):
            out.append(f"{rel}:{call.lineno} trust_remote_code=True")
        if isinstance(call.func, ast.Name) and call.func.id in ("eval", "exec"):  # not model.eval()
            out.append(f"{rel}:{call.lineno} calls {name}()")
    return out


def test_sources_found():
    assert len(SOURCES) > 50, SOURCES  # the walk really covers the package


# findings that are the feature, each with why it is safe (a file whose finding goes away fails
# `test_every_allowed_finding_still_exists`, so the list cannot hide a new one)
ALLOWED = {
    ("datablame/tabular/loading.py", "imports a pickle-like module"):
        "issue 19: a user's scikit-learn model loads from joblib only with trust_pickle=True, with a warning",
}


def _allowed(finding: str) -> bool:
    rel, _, what = finding.partition(":")
    return any(rel == f and what.split(" ", 1)[-1] == kind for f, kind in ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_unpickling_or_silent_except(path: Path):
    assert [f for f in _findings(path) if not _allowed(f)] == []


def test_every_allowed_finding_still_exists():
    for (rel, _kind), _why in ALLOWED.items():
        found = _findings(PACKAGE.parent / rel)
        assert any(_allowed(f) for f in found), rel
        # the joblib import sits behind the trust flag: refused first, warned before it runs
        text = (PACKAGE.parent / rel).read_text(encoding="utf-8")
        assert text.index("if not trust_pickle") < text.index("import joblib")


def test_checker_catches_what_it_claims(tmp_path):
    """The checker itself flags each pattern (so an empty finding list means something)."""
    bad = tmp_path / "datablame" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "import pickle\nimport torch\nimport numpy as np\n"
        "torch.load('x', weights_only=False)\ntorch.load('y')\n"
        "np.load('z', allow_pickle=True)\n"
        "try:\n    pass\nexcept Exception:\n    pass\n"
        "eval('1')\n",
        encoding="utf-8",
    )
    found = _findings(bad, root=tmp_path)
    kinds = " | ".join(found)
    for needle in ("pickle-like", "torch.load without", "allow_pickle", "swallows", "eval()"):
        assert needle in kinds, (needle, found)
    assert len([f for f in found if "torch.load" in f]) == 2
