"""The extras tell the truth: each one in pyproject.toml is named by the code that needs it (in a
``MissingExtraError``), and installs the package that code imports."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
from pathlib import Path

import tomllib

import winnow

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(winnow.__file__).parent


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])


def extras_in_code() -> dict[str, set[str]]:
    """extra -> modules the code asks for by it: ``require(MODULE, EXTRA)`` and
    ``MissingExtraError(EXTRA, MODULE)`` calls (MODULE None where it is a variable)."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or len(node.args) != 2:
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", None))
            first, second = (a.value if isinstance(a, ast.Constant) else None for a in node.args)
            if name == "require" and isinstance(second, str):
                found.setdefault(second, set()).add(first)
            elif name == "MissingExtraError" and isinstance(first, str):
                found.setdefault(first, set()).add(second)
    return found


def installed_closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, as installed here."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_every_extra_is_used_by_code_and_every_named_extra_exists():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = set(project["optional-dependencies"]) - {"dev"}
    named = extras_in_code()
    assert extras - set(named) == set(), "extras that no code names in a MissingExtraError"
    assert set(named) - extras == set(), "code names extras pyproject.toml does not define"
    assert "llm" not in extras


def test_each_extra_installs_the_modules_its_code_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    providers = md.packages_distributions()
    for extra, modules in extras_in_code().items():
        wanted = installed_closure({requirement_name(r) for r in optional[extra]})
        for module in modules - {None}:
            dists = {normalise(d) for d in providers.get(module.partition(".")[0], [])}
            assert dists, f"{module} (extra {extra}) is not installed here"
            assert dists & wanted, f"pip install 'winnow[{extra}]' would not install {module}"


def test_the_core_dependencies_cover_what_core_code_imports_unguarded():
    """httpx (dataset downloads, the Ollama backend) is a core dependency, not behind an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {requirement_name(r) for r in project["dependencies"]}
    assert {"httpx", "numpy", "torch", "transformers", "bm25s", "ir-measures"} <= core
