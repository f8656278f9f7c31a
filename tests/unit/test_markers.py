"""The slow, browser and chaos markers of tests/conftest.py name tests that exist.

They are applied by module path and test name, so a renamed test or module would silently lose
its marker and join `make test-fast` again; this fails instead.
"""

from __future__ import annotations

import ast
import pathlib

from tests.conftest import MODULE_MARKERS, SLOW_TESTS

ROOT = pathlib.Path(__file__).resolve().parents[2]


def defined_tests(module: str) -> set[str]:
    tree = ast.parse((ROOT / module).read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test")}


def test_every_marked_module_exists():
    missing = [module for module in {*MODULE_MARKERS, *SLOW_TESTS} if not (ROOT / module).is_file()]
    assert not missing, f"tests/conftest.py marks modules that do not exist: {missing}"


def test_every_test_marked_slow_by_name_exists():
    missing = {module: sorted(names - defined_tests(module)) for module, names in SLOW_TESTS.items()
               if (ROOT / module).is_file() and names - defined_tests(module)}
    assert not missing, f"tests/conftest.py marks tests slow that do not exist (renamed?): {missing}"
