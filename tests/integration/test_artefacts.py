"""Test runs leave the tracked tree as it was: artefacts (screenshots, reports) go under build/.

The README's pictures in docs/ are refreshed on purpose by `make screenshots`, never by a test
(`make test` once rewrote docs/dashboard.png on every run, so every run left the tree dirty).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# calls that write into a path, and which of their arguments is the destination (None: the
# path the method is called on)
WRITERS: dict[str, int | None] = {
    "copy": 1, "copyfile": 1, "copy2": 1, "copytree": 1, "move": 1, "screenshot": 0,
    "savefig": 0, "write_text": None, "write_bytes": None, "mkdir": None, "touch": None,
    "symlink_to": None, "open": 0,
}  # fmt: skip
TRACKED = {"docs", "custom_components", "edge_addon", "blueprints", "README.md", "PROTOCOL.md"}


def _bindings(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to the repository's root (`REPO`, anything made from `__file__`) and to a
    tracked path in it (`docs = REPO / "docs"`)."""
    roots, tracked = {"REPO"}, set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        targets = {t.id for t in node.targets if isinstance(t, ast.Name)}
        if any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(node.value)):
            roots |= targets
        elif _in_tracked_tree(node.value, roots, tracked):
            tracked |= targets
    return roots, tracked


def _in_tracked_tree(node: ast.AST, roots: set[str], tracked: set[str]) -> bool:
    # `UNIT.name` is a file name, not a path in the tree
    named = {n.value for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n not in named}
    if names & tracked:
        return True
    parts = {
        str(n.value).split("/")[0]
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    return bool(names & roots) and bool(parts & TRACKED)


def _writes_into_tracked_tree(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    roots, tracked = _bindings(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in WRITERS:
            continue
        index = WRITERS[name]
        if index is None:
            destination = func.value if isinstance(func, ast.Attribute) else None
        else:
            destination = node.args[index] if len(node.args) > index else None
        if name == "open" and not (
            len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and re.search(r"[wax+]", str(node.args[1].value))
        ):
            continue
        if destination is not None and _in_tracked_tree(destination, roots, tracked):
            found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_no_test_writes_into_the_tracked_tree() -> None:
    tests = sorted((REPO / "tests").rglob("*.py"))
    found = [w for path in tests for w in _writes_into_tracked_tree(path)]
    assert found == []


def test_the_check_sees_a_copy_into_docs(tmp_path: Path) -> None:
    """The form the e2e test had: a screenshot copied over docs/dashboard.png."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        'REPO = Path(__file__).parents[2]\nshot = REPO / "build" / "e2e" / "dashboard.png"\n'
        'docs = REPO / "docs"\ndocs.mkdir(exist_ok=True)\n'
        'shutil.copyfile(shot, docs / "dashboard.png")\n'
        'shutil.copytree(REPO / "blueprints", tmp / "blueprints")\n'
    )
    assert _writes_into_tracked_tree(sample) == ["sample.py:4 mkdir", "sample.py:5 copyfile"]
