"""Where use cases are declared, and loading them: the shipped ones and the user's own.

The shipped use cases are the folders of ``batch_platform/use_cases``. A deployment adds its
own with ``BATCH_PLATFORM_USE_CASES_DIR``: a directory whose sub-folders each hold a
``defs.yaml`` (and their feature modules), loaded the same way, with no edit of the platform.
Dagster's component loader reads the YAML, so a misspelt attribute fails with its file and
line; two use cases claiming the same table, job or landing folder fail here, naming both.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster.components.core.component_tree import ComponentTree

from batch_platform.components.use_case import DeclarationError, UseCaseComponent
from batch_platform.platform.use_case import UseCase

SHIPPED = Path(__file__).parent / "use_cases"
USER_DIR_VARIABLE = "BATCH_PLATFORM_USE_CASES_DIR"


@dataclass(frozen=True)
class Declared:
    use_case: UseCase
    folder: Path


def folders() -> list[Path]:
    """The roots that hold use-case folders: the shipped one, then the user's, if set."""
    roots = [SHIPPED]
    extra = os.environ.get(USER_DIR_VARIABLE, "").strip()
    if extra:
        root = Path(extra).expanduser().resolve()
        if not root.is_dir():
            raise DeclarationError(f"{USER_DIR_VARIABLE}={extra}: no such directory")
        roots.append(root)
    return roots


def component_tree(root: Path) -> ComponentTree:
    """Dagster's component tree of a folder of use cases, loaded as a Python package."""
    if root == SHIPPED:
        module = importlib.import_module("batch_platform.use_cases")
        return ComponentTree.from_module(module, SHIPPED.parent.parent)
    if not (root / "__init__.py").exists():
        raise DeclarationError(f"{root}: a folder of use cases needs an __init__.py (it is "
                               "loaded as a Python package, like batch_platform/use_cases)")
    parent = str(root.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    return ComponentTree.from_module(importlib.import_module(root.name), root.parent)


# Loaded declarations by the files they were loaded from: every command and run builds the
# definitions, and loading them (YAML, validation, the feature functions' dry run, the
# factory) costs most of a second. A changed file is a new key.
_LOADED: dict[tuple, tuple[dg.Definitions, list[Declared]]] = {}


def _fingerprint(roots: list[Path]) -> tuple:
    return tuple(
        (str(root), tuple(sorted((str(path), path.stat().st_mtime_ns, path.stat().st_size)
                                 for path in root.rglob("*")
                                 if path.is_file() and "__pycache__" not in path.parts)))
        for root in roots)


def load(roots: list[Path] | None = None) -> tuple[dg.Definitions, list[Declared]]:
    """The definitions of every declared use case, and the use cases themselves."""
    roots = roots or folders()
    key = _fingerprint(roots)
    if key not in _LOADED:
        _LOADED[key] = _load(roots)
    return _LOADED[key]


def _load(roots: list[Path]) -> tuple[dg.Definitions, list[Declared]]:
    definitions: list[dg.Definitions] = []
    declared: list[Declared] = []
    for root in roots:
        check_types(root)
        tree = component_tree(root)
        with warnings.catch_warnings():
            # Dagster's own module loading inside the component tree is a preview feature.
            warnings.simplefilter("ignore", dg.PreviewWarning)
            warnings.simplefilter("ignore", dg.BetaWarning)
            try:
                definitions.append(tree.build_defs())
            except DeclarationError:
                raise
            except Exception as err:
                raise _declaration_error(root, err) from err
        for component in _use_case_components(tree):
            declared.append(component)
    check_unique(declared)
    # Dagster merges one component tree per Definitions: the shipped one's stays (the UI shows
    # its YAML), the user's folders join as plain definitions.
    return dg.Definitions.merge(definitions[0], *map(_without_tree, definitions[1:])), declared


def _declaration_error(root: Path, err: BaseException) -> DeclarationError:
    """Dagster's component error as one line: the innermost cause, which names the YAML file
    and line of a wrong attribute (pydantic), or our own ``DeclarationError``."""
    causes = [err]
    while causes[-1].__cause__ is not None and causes[-1].__cause__ not in causes:
        causes.append(causes[-1].__cause__)
    for cause in reversed(causes):
        if isinstance(cause, DeclarationError):
            return cause
    innermost = causes[-1]
    lines = [line.strip() for line in str(innermost).splitlines() if line.strip()]
    return DeclarationError(f"use cases in {root}: " + "; ".join(lines[:6]))


def check_types(root: Path) -> None:
    """Every ``defs.yaml`` names a component type that exists (Dagster's own message names
    neither the file nor the line)."""
    for path in sorted(root.rglob("defs.yaml")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.startswith("type:"):
                continue
            name = line.split(":", 1)[1].split("#", 1)[0].strip().strip("'\"")
            module, _, attribute = name.rpartition(".")
            try:
                found = hasattr(importlib.import_module(module), attribute) if module else False
            except ImportError:
                found = False
            if not found:
                raise DeclarationError(
                    f"{path}:{number}: type: {name!r} is not a component type; a use case is "
                    "`type: batch_platform.components.UseCase`")


def _without_tree(definitions: dg.Definitions) -> dg.Definitions:
    return dg.Definitions(assets=definitions.assets, asset_checks=definitions.asset_checks,
                          jobs=definitions.jobs, schedules=definitions.schedules,
                          sensors=definitions.sensors, resources=definitions.resources)


def _use_case_components(tree: ComponentTree) -> list[Declared]:
    declared = []
    for component in tree.get_all_components(of_type=UseCaseComponent):
        use_case = component.resolved
        assert use_case.declared_in is not None
        declared.append(Declared(use_case, use_case.declared_in))
    return declared


def check_unique(declared: list[Declared]) -> None:
    """Two use cases may share the platform, never a name, a table or a landing folder."""
    claims: dict[str, Declared] = {}
    for entry in declared:
        uc = entry.use_case
        for claim in [f"use case {uc.name}", *(f"table {t}" for t in uc.tables()),
                      *(f"landing folder {f}" for f in uc.landing_folders())]:
            other = claims.get(claim)
            if other is not None:
                raise DeclarationError(
                    f"{entry.folder / 'defs.yaml'}: {claim} is already claimed by "
                    f"{other.folder / 'defs.yaml'}: rename the source or the use case")
            claims[claim] = entry


def use_case(name: str) -> UseCase:
    """The declared use case ``name``."""
    _, declared = load()
    for entry in declared:
        if entry.use_case.name == name:
            return entry.use_case
    raise DeclarationError(f"no use case {name!r}: declared are "
                           f"{', '.join(e.use_case.name for e in declared)}")
