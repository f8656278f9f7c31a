"""docs/configuration.md lists every PLAUD_* variable the code reads, and nothing else.

An operator trusts that page to be complete: a setting missing from it is a setting nobody
knows to change, and a row for a variable the code no longer reads is a setting that silently
does nothing. The code's names are found four ways, because no single one sees them all:

- string literals in plaud/, tasks/ and workers/ that are a whole ``PLAUD_*`` name;
- the variables the three settings readers actually look up, seen by handing each of them an
  environment that records every key asked for. ``PipelineSettings.from_env`` builds its names
  from dataclass fields (``PLAUD_<FIELD>``) and the sandbox from its own fields
  (``PLAUD_SANDBOX_<FIELD>``), so neither name appears whole in the source;
- the dataclass fields themselves, so a reader that starts skipping a field is noticed too;
- the ``<NAME>_FILE`` form of every secret read through ``read_secret``.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from plaud.config import PlaudConfig
from plaud.errors import ConfigError
from plaud.sandbox.settings import SandboxSettings
from tasks.settings import PipelineSettings

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("plaud", "tasks", "workers")
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
NAME = re.compile(r"PLAUD_[A-Z0-9_]+")


class RecordingEnv(dict):
    """An empty environment that remembers every variable name it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def source_files() -> Iterator[pathlib.Path]:
    for package in SOURCE_PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def literal_names() -> dict[str, str]:
    """Whole ``PLAUD_*`` names in string literals (a prefix such as ``PLAUD_SANDBOX_`` is not a name)."""
    found: dict[str, str] = {}
    for path in source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value) \
                    and not node.value.endswith("_"):
                found.setdefault(node.value, f"{path.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Call) and _called_name(node) == "read_secret":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and NAME.fullmatch(arg.value):
                        found.setdefault(f"{arg.value}_FILE", f"{path.relative_to(ROOT)}:{node.lineno} (read_secret)")
    return found


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def looked_up_names() -> dict[str, str]:
    """Every variable the settings readers ask the environment for, PLAUD_* or not."""
    found: dict[str, str] = {}
    for reader in (PlaudConfig.from_env, PipelineSettings.from_env, SandboxSettings.from_env):
        env = RecordingEnv()
        reader(env)
        for name in env.asked:
            found.setdefault(name, f"{reader.__qualname__} looks it up")
    return found


def field_names() -> dict[str, str]:
    """The names the settings dataclasses' fields map to, whether or not the reader still asks for them."""
    found: dict[str, str] = {}
    for field in dataclasses.fields(PipelineSettings):
        name = f"PLAUD_{field.name.upper()}"
        if _pipeline_reads(name, field):
            found[name] = f"PipelineSettings.{field.name}"
    for field in SandboxSettings.fields():
        found[f"PLAUD_SANDBOX_{field.name.upper()}"] = f"SandboxSettings.{field.name}"
    return found


def _pipeline_reads(name: str, field: dataclasses.Field) -> bool:
    """Whether setting ``name`` changes PipelineSettings (some fields are read under another name, e.g. REDIS_URL)."""
    default = field.default
    probe = {bool: "true", int: str(default + 7) if isinstance(default, int) else "", float: "7.5",
             str: "probe-value"}[type(default)]
    try:
        return PipelineSettings.from_env({name: probe}) != PipelineSettings.from_env({})
    except ConfigError as exc:
        return name in str(exc)


def code_names() -> dict[str, str]:
    """Every PLAUD_* name the code reads, with where it was seen."""
    found = {**field_names(), **looked_up_names(), **literal_names()}
    return {name: where for name, where in found.items() if NAME.fullmatch(name)}


def documented(text: str) -> tuple[set[str], set[str]]:
    """(names in the first cell of a table row, every whole PLAUD_* name anywhere on the page)."""
    in_tables = set()
    for line in text.splitlines():
        cells = line.split("|")
        if line.lstrip().startswith("|") and len(cells) > 2 and not set(cells[1].strip()) <= set("-: "):
            in_tables |= {n for n in NAME.findall(cells[1]) if not n.endswith("_")}
    anywhere = {n for n in NAME.findall(text) if not n.endswith("_")}
    return in_tables, anywhere


def undocumented(code: dict[str, str], text: str) -> dict[str, str]:
    in_tables, _ = documented(text)
    return {name: where for name, where in sorted(code.items()) if name not in in_tables}


def not_read(code: dict[str, str], text: str) -> list[str]:
    _, anywhere = documented(text)
    return sorted(anywhere - set(code))


def test_every_plaud_variable_the_code_reads_is_in_a_table():
    missing = undocumented(code_names(), CONFIGURATION_DOC.read_text(encoding="utf-8"))
    assert not missing, ("read by the code but missing from a table in docs/configuration.md:\n"
                         + "\n".join(f"  {name}  ({where})" for name, where in missing.items()))


def test_every_plaud_variable_the_page_names_is_read():
    stale = not_read(code_names(), CONFIGURATION_DOC.read_text(encoding="utf-8"))
    assert not stale, f"docs/configuration.md names variables the code does not read: {stale}"


@pytest.mark.parametrize("name", ["REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_the_redis_and_celery_variables_are_in_a_table(name):
    assert name in looked_up_names()  # read by PipelineSettings.from_env under its own name
    row = re.search(rf"^\|\s*`{name}`", CONFIGURATION_DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert row, f"{name} has no row in docs/configuration.md"


def test_the_finders_see_each_kind_of_name():
    """If a finder went blind (a refactor moved the readers), the checks above would pass on nothing."""
    code = code_names()
    assert "PLAUD_TX_RATE_LIMIT" in literal_names()  # a plain literal
    assert "PLAUD_POLL_DEADLINE_S" in code and "PLAUD_POLL_DEADLINE_S" not in literal_names()  # from a field
    assert "PLAUD_SANDBOX_FAULT_5XX" in code  # the sandbox's prefix + field
    assert {"PLAUD_WEBHOOK_SECRET_FILE", "PLAUD_USER_ID_FILE", "PLAUD_API_KEY_FILE"} <= set(code)  # read_secret
    assert "PLAUD_REDIS_URL" not in code  # redis_url is read as REDIS_URL, not under its field's name


def test_the_check_fails_when_a_row_is_removed_or_a_stale_one_added():
    text = CONFIGURATION_DOC.read_text(encoding="utf-8")
    code = code_names()
    without_row = "\n".join(line for line in text.splitlines() if not line.startswith("| `PLAUD_POLL_DEADLINE_S`"))
    assert "PLAUD_POLL_DEADLINE_S" in undocumented(code, without_row)
    with_stale_row = text + "\n| `PLAUD_NO_SUCH_SETTING` | `1` | gone |\n"
    assert "PLAUD_NO_SUCH_SETTING" in not_read(code, with_stale_row)
