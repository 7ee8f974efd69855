"""The package rules of DESIGN.md, checked on the source.

Every module of each package is parsed (not imported) and its imports are
compared with what the package may not import.  A rule that starts to fail
here means an arrow in the data flow now points backwards.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# package (dotted) -> top-level or dotted module prefixes it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "protocol": ("trio", "ctypes", "lark", "ktapd", "ktapctl"),
    "ktapctl.lang": ("trio", "ktapd", "ktapctl.client", "ktapctl.cli", "ktapctl.render"),
    "ktapctl": ("ktapd",),
    "ktapd": ("ktapctl", "lark"),
    "ktapd.probes": ("ktapd.vm", "ktapd.session", "ktapd.server", "ktapd.worker"),
    "ktapd.vm": ("trio", "ktapd.probes", "ktapd.server", "ctypes"),
}
# The one allowed exception (DESIGN.md): ktapctl may start an embedded daemon.
ALLOWED: dict[str, tuple[str, ...]] = {"ktapctl": ("ktapd.embedded",)}
# ctypes is confined to the probe layer's ABI and perf_event modules.
CTYPES_MODULES = {"ktapd.probes._perf_abi", "ktapd.probes.perf_event"}


def _modules(package: str):
    base = ROOT / package.replace(".", "/")
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), path


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_rules(package):
    problems = []
    for module, path in _modules(package):
        for name, line in _imports(path):
            for banned in FORBIDDEN[package]:
                if _matches(name, banned) and not any(
                    _matches(name, ok) for ok in ALLOWED.get(package, ())
                ):
                    problems.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {name}")
    assert not problems, "\n".join(problems)


def test_ctypes_is_confined():
    problems = []
    for module, path in (m for pkg in ("protocol", "ktapctl", "ktapd") for m in _modules(pkg)):
        if module in CTYPES_MODULES:
            continue
        for name, line in _imports(path):
            if _matches(name, "ctypes"):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} imports ctypes")
    assert not problems, "\n".join(problems)


def test_every_module_has_a_docstring():
    missing = []
    for package in ("protocol", "ktapctl", "ktapd"):
        for _module, path in _modules(package):
            tree = ast.parse(path.read_text())
            if path.name == "__init__.py" and not tree.body:
                continue
            if not ast.get_docstring(tree):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, "modules without a docstring: " + ", ".join(missing)
