"""The docs against the code: settings, declaration attributes, commands, paths and tables.

Each test reads the Markdown as a reader would and fails when a page says something the code
does not do: a variable that is not read (or one missing), a wrong default, a command line the
real parser refuses, a use case nobody declared, a path or a table that does not exist, a
README that grew past its budget.
"""

from __future__ import annotations

import ast
import glob
import inspect
import json
import re
import shlex
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from batch_platform import catalog, cli
from batch_platform.components.use_case import UseCaseComponent
from batch_platform.platform.models import registry
from batch_platform.settings import ENV_PREFIX, Settings
from batch_platform_tests.conftest import ATTACH_LAKE

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
CONFIGURATION = ROOT / "docs" / "configuration.md"
# The pages whose command lines are checked against the parser.
COMMAND_PAGES = [README, ROOT / "docs" / "operators.md", ROOT / "docs" / "analysts.md"]
# The tutorial's own use case (orders) lives in a directory of the reader's; its page is
# followed step by step by test_tutorial.py instead.
TUTORIAL = ROOT / "docs" / "add-a-use-case.md"
README_MAX_LINES = 220
BATCH_PLATFORM_COMMAND = ".venv/bin/batch-platform"


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def without_fenced_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def table_rows(text: str) -> Iterator[list[str]]:
    """The cells of every Markdown table row (separator rows left out)."""
    for line in text.splitlines():
        if not line.startswith("|") or re.match(r"^\|[\s:|-]+\|$", line):
            continue
        yield [cell.strip() for cell in line.strip().strip("|").split("|")]


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


# --- (a) configuration: every variable the settings read, with the code's default ----------

def variables_read_by_settings() -> dict[str, object]:
    """Every ``read("NAME", parse, default)`` in ``Settings.from_env``, with its default as the
    code has it (a literal, or the dataclass field ``defaults.<field>``)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Settings.from_env)))
    defaults = Settings(data_dir=Path("data"))
    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "read"):
            continue
        name_node, _, default_node = node.args
        assert isinstance(name_node, ast.Constant)
        if isinstance(default_node, ast.Constant):
            default = default_node.value
        else:
            assert isinstance(default_node, ast.Attribute), ast.dump(default_node)
            default = getattr(defaults, default_node.attr)
        found[ENV_PREFIX + name_node.value] = default
    return found


def every_variable() -> dict[str, object]:
    """The settings' variables, and the one the catalog reads (user use cases)."""
    return variables_read_by_settings() | {catalog.USER_DIR_VARIABLE: None}


def shown(value: object) -> str:
    """A default as the pages write it: YAML-like, integral floats without ``.0``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(", ", ": "))
    if value == "":
        return '""'
    return str(value)


def default_matches(cell: str, default: object) -> bool:
    if default is None:
        return cell.startswith("unset")
    quoted = backticked(cell)
    return bool(quoted) and quoted[0] == shown(default)


def configuration_rows(prefix: str) -> dict[str, list[str]]:
    """Rows of the configuration page whose first cell names ``prefix``-ed things, by name."""
    rows: dict[str, list[str]] = {}
    for cells in table_rows(CONFIGURATION.read_text()):
        for name in backticked(cells[0]):
            if name.startswith(prefix):
                assert name not in rows, f"{name} is listed twice"
                rows[name] = cells
    return rows


def test_the_settings_read_the_variables_the_parser_finds() -> None:
    """The source parse finds what the settings really read: setting each variable to an
    invalid value makes ``from_env`` name it."""
    found = variables_read_by_settings()
    assert len(found) >= 20, found
    typed = {name for name, default in found.items()
             if isinstance(default, int | float) and not isinstance(default, bool)}
    for name in typed:
        with pytest.raises(ValueError, match=name):
            Settings.from_env({name: "not-a-number"})


def test_the_configuration_page_lists_every_variable_with_its_default() -> None:
    documented = configuration_rows(ENV_PREFIX)
    variables = every_variable()
    missing = sorted(set(variables) - set(documented))
    unknown = sorted(set(documented) - set(variables))
    assert not missing, f"docs/configuration.md does not list {missing}"
    assert not unknown, f"docs/configuration.md lists variables nothing reads: {unknown}"
    wrong = {name: (documented[name][1], shown(default) if default is not None else "unset")
             for name, default in variables.items()
             if not default_matches(documented[name][1], default)}
    assert not wrong, f"defaults (page, code): {wrong}"


def test_no_page_names_a_variable_nothing_reads() -> None:
    variables = set(every_variable())
    for page in PAGES:
        named = set(re.findall(r"\bBATCH_PLATFORM_[A-Z_]*[A-Z]\b", page.read_text()))
        assert not named - variables, f"{page_id(page)}: {sorted(named - variables)}"


# --- (a) configuration: every attribute of a declaration, with the model's default ---------

def _unwrap(annotation: object) -> tuple[str, object]:
    """("model" | "dict" | "list", the model) for a nested declaration; ("leaf", annotation)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        return ("model", models[0]) if models else ("leaf", annotation)
    if origin in (dict, list):
        kind, inner = _unwrap(typing.get_args(annotation)[-1])
        if kind == "model":
            return ("dict" if origin is dict else "list", inner)
        return ("leaf", annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", annotation)
    return ("leaf", annotation)


REQUIRED = object()


def declaration_attributes(model: type[BaseModel] = UseCaseComponent, prefix: str = ""
                           ) -> Iterator[tuple[str, object]]:
    """Every leaf attribute of a use-case declaration as a dotted path, with its default.
    A mapping of declarations reads ``<singular>`` (``sources.<source>.path``), a list ``[]``."""
    for name, field in model.model_fields.items():
        kind, inner = _unwrap(field.annotation)
        path = prefix + name
        if kind == "model":
            yield from declaration_attributes(inner, f"{path}.")
        elif kind == "dict":
            yield from declaration_attributes(inner, f"{path}.<{name.removesuffix('s')}>.")
        elif kind == "list":
            yield from declaration_attributes(inner, f"{path}[].")
        elif field.is_required():
            yield path, REQUIRED
        else:
            yield path, (field.default_factory() if field.default_factory is not None
                         else field.default)


def test_the_configuration_page_lists_every_declaration_attribute_with_its_default() -> None:
    attributes = dict(declaration_attributes())
    assert "checks.psi_warn" in attributes and "sources.<source>.columns.<column>.type" in \
        attributes, sorted(attributes)
    documented = {name: cells for cells in table_rows(CONFIGURATION.read_text())
                  for name in backticked(cells[0]) if name in attributes}
    missing = sorted(set(attributes) - set(documented))
    assert not missing, f"docs/configuration.md does not list the attributes {missing}"
    wrong = {}
    for name, default in attributes.items():
        cell = documented[name][1]
        ok = (cell.startswith("required") if default is REQUIRED
              else default_matches(cell, default))
        if not ok:
            wrong[name] = (cell, "required" if default is REQUIRED else shown(default))
    assert not wrong, f"defaults (page, code): {wrong}"


# --- (b) command lines: the real parser, and declared use cases -----------------------------

def command_lines(page: Path) -> Iterator[tuple[str, list[str]]]:
    """``.venv/bin/batch-platform`` lines of the page's bash blocks, as the shell splits them.

    Skipped on purpose: lines with a shell variable (``$``), a pipe or a chain (``|``, ``&&``,
    ``;``), whose arguments the shell decides, not the page.
    """
    for block in fenced_blocks(page.read_text(), "bash"):
        for line in block.splitlines():
            if BATCH_PLATFORM_COMMAND not in line:
                continue
            if re.search(r"\$|\||&&|;", line.split(" #", 1)[0]):
                continue
            words = shlex.split(line, comments=True)
            yield line, words[words.index(BATCH_PLATFORM_COMMAND) + 1:]


def test_the_pages_show_command_lines() -> None:
    for page in COMMAND_PAGES:
        assert list(command_lines(page)), f"{page_id(page)} shows no batch-platform command"


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=page_id)
def test_every_command_line_parses_and_names_a_declared_use_case(page: Path, capsys) -> None:
    declared = {use_case.name for use_case in cli.declared_use_cases()}
    parser = cli.build_parser()
    for line, argv in command_lines(page):
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page_id(page)}: the parser refuses\n  {line}\n"
                        f"{capsys.readouterr().err}")
        use_case = getattr(args, "use_case", None)
        assert use_case is None or use_case in declared, (
            f"{page_id(page)}: --use-case {use_case} is not declared ({sorted(declared)}): "
            f"{line}")


# --- (c) paths and tables that exist ----------------------------------------------------------

PATH_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".lock")
# Paths under the data directory (created by runs), outside the repository, or URIs.
NOT_REPO_PATHS = re.compile(r"^(data/|<data dir>|\.benchmark/|/|~|\$)|://")
STALE_LAYOUT = re.compile(r"(?<![\w/.-])(core|defs)/")


def repo_paths(page: Path) -> list[str]:
    """Backticked paths in the prose and tables of ``page``: a ``/`` and a file suffix, or a
    trailing ``/`` (a folder). ``<name>`` stands for any one path segment."""
    paths = []
    for token in backticked(without_fenced_blocks(page.read_text())):
        token = token.strip()
        if "/" not in token or " " in token or NOT_REPO_PATHS.search(token):
            continue
        if token.endswith(PATH_SUFFIXES) or token.endswith("/"):
            paths.append(token)
    return paths


def exists(path: str) -> bool:
    pattern = re.sub(r"<[^>/]+>", "*", path.split(":", 1)[0].rstrip("/"))
    return bool(glob.glob(str(ROOT / pattern)))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_path_a_page_names_exists(page: Path) -> None:
    missing = [path for path in repo_paths(page) if not exists(path)]
    assert not missing, f"{page_id(page)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_page_names_the_old_layout(page: Path) -> None:
    stale = STALE_LAYOUT.findall(page.read_text())
    assert not stale, f"{page_id(page)} names the old layout ({sorted(set(stale))}/)"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", without_fenced_blocks(page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page: Path) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", without_fenced_blocks(page.read_text()))
    broken = []
    for link in links:
        if "://" in link or link.startswith("mailto:"):
            continue
        target, _, anchor = link.partition("#")
        path = page.parent / target if target else page
        if not path.exists() or (anchor and path.suffix == ".md"
                                 and anchor not in anchors(path)):
            broken.append(link)
    assert not broken, f"{page_id(page)} links to {broken}"


TABLE = re.compile(r"(?<![\w/.])((?:raw|quarantine|features|predictions|reports|models)"
                   r"\.[a-z_]+)(?!\.?[\w(/])")
FILE_SUFFIX_WORDS = {"py", "md", "yaml", "yml"}


@pytest.mark.parametrize("page", [p for p in PAGES if p != TUTORIAL], ids=page_id)
def test_every_warehouse_table_a_page_names_exists(page: Path) -> None:
    tables = {registry.REGISTRY_TABLE, registry.PROMOTIONS_TABLE} | {
        table for use_case in cli.declared_use_cases() for table in use_case.tables()}
    # Declaration attributes (features.columns, ...) and file names (features.py) look alike.
    attributes = {".".join(path.split(".")[:2]) for path, _ in declaration_attributes()}
    named = {t for t in TABLE.findall(page.read_text())
             if t.split(".")[1] not in FILE_SUFFIX_WORDS and t not in attributes}
    unknown = sorted(named - tables)
    assert not unknown, f"{page_id(page)} names tables no use case writes: {unknown}"


@pytest.fixture(scope="module")
def definition_names(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The asset keys, jobs, sensors and schedules the definitions really hold."""
    from batch_platform.definitions import build_definitions

    defs = build_definitions(Settings(data_dir=tmp_path_factory.mktemp("data")))
    repository = defs.get_repository_def()
    return {
        "assets": {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()},
        "automation": {d.name for d in [*repository.sensor_defs, *repository.schedule_defs]}
        | {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")},
    }


ASSET_KEY = re.compile(r"^(?:raw|features|models|predictions|reports|platform)/[a-z_]+$")
# A job (<use case>_daily, ...), or a sensor or schedule, with or without its use case.
AUTOMATION_NAME = re.compile(r"^(?:[a-z][a-z0-9_]*_(?:daily|features|train|predict|freshness|"
                             r"promote|rollback)|"
                             r"(?:[a-z][a-z0-9_]*_)?(?:landing_sensor|nightly_schedule|"
                             r"freshness_schedule|refresh_features_and_reports|"
                             r"rescore_stale_days)|"
                             r"lake_maintenance(?:_schedule)?|platform_run_sweeper)$")


@pytest.mark.parametrize("page", [p for p in PAGES if p != TUTORIAL], ids=page_id)
def test_every_asset_job_sensor_and_schedule_a_page_names_exists(
    page: Path, definition_names: dict[str, set[str]]
) -> None:
    tokens = set(backticked(page.read_text()))
    assets = {t for t in tokens if ASSET_KEY.match(t)} - definition_names["assets"]
    names = {t for t in tokens if AUTOMATION_NAME.match(t)} - definition_names["automation"]
    assert not assets and not names, (
        f"{page_id(page)} names what the definitions do not hold: assets {sorted(assets)}, "
        f"jobs, sensors or schedules {sorted(names)}")


def test_the_attach_line_the_tests_use_is_the_one_the_pages_give() -> None:
    """The line other tests attach the lake with (the DuckDB CLI, analysts' processes)."""
    for page in (README, ROOT / "docs" / "analysts.md"):
        assert ATTACH_LAKE in page.read_text(), f"{page_id(page)} lacks the attach line"


# --- (d) the README's budget --------------------------------------------------------------------

def test_the_readme_stays_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"
