"""The use-case component: a ``defs.yaml`` declaration, validated, resolved into a ``UseCase``.

``type: batch_platform.components.UseCase`` in a folder's ``defs.yaml`` makes that folder a
use case. Dagster validates the attributes against the models below (a misspelt or mistyped
attribute fails with the file and line); ``to_use_case`` then checks what pydantic cannot
(time zones, windows, the feature function and the columns it really produces, outcomes kept
out of the features) and ``build_defs`` hands the result to the factory.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
import polars as pl
from dagster._utils.schedules import is_valid_cron_string
from pydantic import Field, PrivateAttr

from batch_platform.platform.features.spec import BINARY, FeatureSpec
from batch_platform.platform.ingest import schema
from batch_platform.platform.ingest.validate import LINEAGE_COLUMNS
from batch_platform.platform.monitoring.audits import AuditThresholds, RowHistory
from batch_platform.platform.use_case import (
    Automation,
    Checks,
    Features,
    FeatureSet,
    LandingSource,
    ModelSpec,
    Partitions,
    ReferenceSource,
    Retraining,
    Scoring,
    ThresholdPolicy,
    UseCase,
)

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DAILY_PATH = re.compile(r"^(?P<folder>[a-z][a-z0-9_]*)/\{date\}\.csv$")
FUNCTION_REFERENCE = re.compile(r"^(?P<file>[A-Za-z0-9_./-]+\.py):(?P<name>[A-Za-z_]\w*)$")


def _to_date(_context: object, value: object) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a date like 2013-01-31") from None


# YAML reads 2013-01-01 as a date, and "2013-01-01" as text: either is a day.
Day = Annotated[dt.date, dg.Resolver(_to_date, model_field_type=str | dt.date)]


class DeclarationError(ValueError):
    """A use-case declaration that cannot work; the message names the file and attribute."""


# --- the declaration's attributes --------------------------------------------------------

class ColumnDecl(dg.Resolvable, dg.Model):
    type: str
    required: bool = False
    min: float | None = None
    max: float | None = None
    one_of: list[str] | None = None
    pattern: str | None = None
    describe: str | None = None
    max_length: int | None = None
    multiline: bool = False


class RowRuleDecl(dg.Resolvable, dg.Model):
    rule: str
    reason: str


class PlacedByDecl(dg.Resolvable, dg.Model):
    date_columns: list[str] | None = None
    timestamp: str | None = None
    hour_column: str | None = None


class RowHistoryDecl(dg.Resolvable, dg.Model):
    """A day's rows within ``tolerance`` of the same weekday's median over ``weeks`` weeks."""

    weeks: int = 4
    tolerance: float = 0.5
    min_weeks: int = 3


class SourceDecl(dg.Resolvable, dg.Model):
    path: str | None = None  # "<folder>/{date}.csv"; the default folder is the source's name
    columns: dict[str, ColumnDecl]
    key: list[str] = Field(default_factory=list)
    row_rules: list[RowRuleDecl] = Field(default_factory=list)
    placed_by: PlacedByDecl | None = None
    expected_rows_per_day: list[int] | None = None
    min_rows: int = 0
    # renamed: whole once under its name; manifest: <file>.manifest.json names rows, bytes and
    # SHA-256; settled: unchanged for BATCH_PLATFORM_LANDING_SETTLE_SECONDS.
    complete_when: Literal["renamed", "manifest", "settled"] = "renamed"
    rows_vs_history: RowHistoryDecl | None = None


class ReferenceDecl(dg.Resolvable, dg.Model):
    columns: dict[str, ColumnDecl]
    key: list[str] = Field(default_factory=list)


class PartitionsDecl(dg.Resolvable, dg.Model):
    start: Day
    end: Day | None = None
    timezone: str = "UTC"
    nightly_cron: str = "30 2 * * *"


class FeaturesDecl(dg.Resolvable, dg.Model):
    module: str = "features.py"
    rows: str
    context: str | None = None
    rows_from: str
    lookback_days: int = Field(default=0, ge=0)
    references: list[str] = Field(default_factory=list)
    id_column: str
    label: str
    columns: list[str]
    categorical: list[str] = Field(default_factory=list)
    segments: list[str] = Field(default_factory=list)
    outcomes: list[str] = Field(default_factory=list)
    drift: list[str] = Field(default_factory=list)


class WindowDecl(dg.Resolvable, dg.Model):
    start: Day
    end: Day


class ThresholdDecl(dg.Resolvable, dg.Model):
    policy: Literal["f1", "fixed", "precision", "positive_rate"] = "f1"
    value: float | None = None


class ChallengerDecl(dg.Resolvable, dg.Model):
    columns: list[str] | None = None
    rounds: int | None = Field(default=None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)


class ModelDecl(dg.Resolvable, dg.Model):
    objective: Literal["binary", "regression"]
    train: WindowDecl
    validation: WindowDecl
    rounds: int = Field(default=300, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: ThresholdDecl | None = None
    columns: list[str] | None = None
    challenger: ChallengerDecl | None = None


class ScoringDecl(dg.Resolvable, dg.Model):
    explain: Literal["all", "predicted_positive", "riskiest", "none"] = "all"
    explain_max_rows: int = Field(default=1_000, ge=1)
    scorer: Literal["lightgbm", "compiled"] = "lightgbm"
    engine: Literal["local", "ray"] = "local"
    band_quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.9])


class ChecksDecl(dg.Resolvable, dg.Model):
    max_reject_fraction: float = Field(default=0.05, ge=0, le=1)
    max_null_fraction: float = Field(default=AuditThresholds.max_null_fraction, ge=0, le=1)
    psi_warn: float = Field(default=AuditThresholds.psi_warn, gt=0)
    psi_error: float = Field(default=AuditThresholds.psi_error, gt=0)
    psi_min_rows: int = Field(default=AuditThresholds.psi_min_rows, ge=1)
    score_psi_warn: float = Field(default=AuditThresholds.score_psi_warn, gt=0)
    freshness_lag_minutes: float = Field(default=60.0, gt=0)


class RetrainingDecl(dg.Resolvable, dg.Model):
    cron: str = Retraining.cron
    window_days: int = Field(default=Retraining.window_days, ge=2)
    validation_days: int = Field(default=Retraining.validation_days, ge=1)
    rounds: int | None = Field(default=None, ge=1)


class AutomationDecl(dg.Resolvable, dg.Model):
    landing_sensor: bool = True
    nightly_schedule: bool = True
    freshness_schedule: bool = True
    reports_follow_predictions: bool = True
    rescore_after_champion_change: bool = True
    rerun_days_looking_back: bool = True
    retraining_schedule: bool = False
    retraining: RetrainingDecl = Field(default_factory=RetrainingDecl)


class DemoDecl(dg.Resolvable, dg.Model):
    score: WindowDecl | None = None


class UseCaseComponent(dg.Component, dg.Resolvable, dg.Model):
    """A batch-inference use case: its data, features, model, scoring, checks and automation.

    Builds raw, quarantine and reference assets for its sources, then features, model,
    predictions and the daily report, each stage's checks, its jobs, sensors and schedules.
    """

    name: str
    description: str = ""
    partitions: PartitionsDecl
    sources: dict[str, SourceDecl]
    references: dict[str, ReferenceDecl] = Field(default_factory=dict)
    features: FeaturesDecl
    training: ModelDecl
    scoring: ScoringDecl = Field(default_factory=ScoringDecl)
    checks: ChecksDecl = Field(default_factory=ChecksDecl)
    automation: AutomationDecl = Field(default_factory=AutomationDecl)
    lander: str | None = None
    demo: DemoDecl = Field(default_factory=DemoDecl)

    _resolved: UseCase | None = PrivateAttr(default=None)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from batch_platform.orchestration.factory import use_case_definitions

        return use_case_definitions(self.to_use_case(context.path))

    def to_use_case(self, folder: Path) -> UseCase:
        """The resolved use case (once per component: its feature module is imported once)."""
        if self._resolved is None or self._resolved.declared_in != folder:
            self._resolved = resolve(self, folder)
        return self._resolved

    @property
    def resolved(self) -> UseCase:
        assert self._resolved is not None, "build_defs first"
        return self._resolved


# --- resolution: the checks pydantic cannot make ------------------------------------------

def resolve(decl: UseCaseComponent, folder: Path) -> UseCase:
    where = str(folder / "defs.yaml")

    def fail(attribute: str, what: str) -> DeclarationError:
        return DeclarationError(f"{where}: {attribute}: {what}")

    if not NAME.match(decl.name):
        raise fail("name", f"{decl.name!r} must be lower-case letters, digits and underscores, "
                           "starting with a letter (it names tables and jobs)")
    timezone = _timezone(decl.partitions.timezone, fail)
    if decl.partitions.end is not None and decl.partitions.end < decl.partitions.start:
        raise fail("partitions.end", f"{decl.partitions.end} is before partitions.start "
                                     f"{decl.partitions.start}")
    sources = {name: _source(name, s, timezone, fail) for name, s in decl.sources.items()}
    references = {name: _reference(name, r, timezone, fail)
                  for name, r in decl.references.items()}
    if not sources:
        raise fail("sources", "declare at least one daily landing source")
    clash = sorted(set(sources) & set(references))
    if clash:
        raise fail("references", f"{clash} are also daily sources: a table has one source")
    model = _model(decl.training, decl.partitions, decl.features.columns, fail)
    spec = FeatureSpec(
        use_case=decl.name, id_column=decl.features.id_column,
        label_column=decl.features.label, feature_columns=tuple(decl.features.columns),
        categorical_columns=tuple(decl.features.categorical),
        segment_columns=tuple(decl.features.segments),
        drift_columns=tuple(decl.features.drift), objective=model.objective,
        outcome_columns=tuple(decl.features.outcomes))
    features = _features(decl.features, spec, folder, sources, references, fail)
    check_feature_output(features, sources, references, fail)
    c = decl.checks
    if c.psi_warn > c.psi_error:
        raise fail("checks.psi_warn", f"{c.psi_warn} is above checks.psi_error {c.psi_error}")
    if len(decl.scoring.band_quantiles) != 2:
        raise fail("scoring.band_quantiles", "give two quantiles [low, high]")
    low, high = decl.scoring.band_quantiles
    if not 0 < low < high < 1:
        raise fail("scoring.band_quantiles", f"({low}, {high}) must be two quantiles "
                                             "0 < low < high < 1")
    return UseCase(
        name=decl.name, description=decl.description,
        partitions=Partitions(decl.partitions.start, decl.partitions.end, timezone,
                              decl.partitions.nightly_cron),
        sources=sources, references=references, features=features, model=model,
        scoring=Scoring(decl.scoring.explain, decl.scoring.explain_max_rows,
                        decl.scoring.scorer, decl.scoring.engine, (low, high)),
        checks=Checks(c.max_reject_fraction, AuditThresholds(
            psi_warn=c.psi_warn, psi_error=c.psi_error, psi_min_rows=c.psi_min_rows,
            score_psi_warn=c.score_psi_warn, max_null_fraction=c.max_null_fraction),
            c.freshness_lag_minutes),
        automation=_automation(decl.automation, fail),
        lander=_function(folder, decl.lander, "lander", fail) if decl.lander else None,
        demo_score=(decl.demo.score.start, decl.demo.score.end) if decl.demo.score else None,
        declared_in=folder,
    )


def _automation(decl: AutomationDecl, fail) -> Automation:
    r = decl.retraining
    if not is_valid_cron_string(r.cron):
        raise fail("automation.retraining.cron", f"{r.cron!r} is not a cron schedule (five "
                                                 "fields, such as '0 4 1 * *')")
    if r.validation_days >= r.window_days:
        raise fail("automation.retraining.validation_days",
                   f"{r.validation_days} leaves no training day in window_days {r.window_days}")
    switches = decl.model_dump(exclude={"retraining"})
    return Automation(**switches, retraining=Retraining(r.cron, r.window_days,
                                                        r.validation_days, r.rounds))


def _timezone(name: str, fail) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail("partitions.timezone", f"{name!r} is not a time zone (IANA names such as "
                                          "America/New_York or UTC)") from None
    return name


def _columns(prefix: str, columns: Mapping[str, ColumnDecl], timezone: str, fail
             ) -> tuple[schema.Column, ...]:
    built = []
    for name, c in columns.items():
        try:
            built.append(schema.declared_column(
                name, c.type, timezone, required=c.required, min=c.min, max=c.max,
                one_of=c.one_of, pattern=c.pattern, describe=c.describe,
                max_length=c.max_length, multiline=c.multiline))
        except ValueError as err:
            raise fail(f"{prefix}.columns.{name}", str(err)) from None
    return tuple(built)


def _known(prefix: str, names: list[str] | None, columns: Mapping[str, Any], fail) -> None:
    unknown = [n for n in names or [] if n not in columns]
    if unknown:
        raise fail(prefix, f"{unknown} are not columns of the source ({', '.join(columns)})")


def _source(name: str, decl: SourceDecl, timezone: str, fail) -> LandingSource:
    prefix = f"sources.{name}"
    if not NAME.match(name):
        raise fail(prefix, "a source name is lower-case letters, digits and underscores")
    path = decl.path or f"{name}/{{date}}.csv"
    if not DAILY_PATH.match(path):
        raise fail(f"{prefix}.path", f"{path!r} must look like '<folder>/{{date}}.csv'")
    columns = _columns(prefix, decl.columns, timezone, fail)
    _known(f"{prefix}.key", decl.key, decl.columns, fail)
    placed = decl.placed_by or PlacedByDecl()
    if placed.date_columns is not None and len(placed.date_columns) != 3:
        raise fail(f"{prefix}.placed_by.date_columns", "name three columns: year, month, day")
    _known(f"{prefix}.placed_by", [*(placed.date_columns or []),
                                   *([placed.timestamp] if placed.timestamp else []),
                                   *([placed.hour_column] if placed.hour_column else [])],
           decl.columns, fail)
    if placed.timestamp and decl.columns[placed.timestamp].type != "timestamp":
        raise fail(f"{prefix}.placed_by.timestamp", f"{placed.timestamp} is a "
                                                    f"{decl.columns[placed.timestamp].type}, "
                                                    "not a timestamp")
    if not placed.date_columns and not placed.timestamp:
        raise fail(f"{prefix}.placed_by", "say which column places a row in its partition: "
                                          "a timestamp, or date_columns [year, month, day]")
    try:
        rules = tuple(schema.sql_rule(r.rule, r.reason) for r in decl.row_rules)
        source = schema.SourceSchema(
            name=name, columns=columns, key=tuple(decl.key), row_rules=rules,
            date_columns=tuple(placed.date_columns) if placed.date_columns else None,
            timestamp_column=placed.timestamp, hour_column=placed.hour_column,
            timezone=timezone, min_rows=decl.min_rows)
    except ValueError as err:
        raise fail(f"{prefix}.row_rules", str(err)) from None
    expected = decl.expected_rows_per_day or [0, 2**31 - 1]
    if len(expected) != 2:
        raise fail(f"{prefix}.expected_rows_per_day", "give [low, high] rows a day")
    low, high = expected
    if not 0 <= low <= high:
        raise fail(f"{prefix}.expected_rows_per_day", f"[{low}, {high}] must be [low, high] "
                                                      "with 0 <= low <= high")
    history = None
    if decl.rows_vs_history is not None:
        h = decl.rows_vs_history
        if not (h.weeks >= 1 and 1 <= h.min_weeks <= h.weeks and h.tolerance > 0):
            raise fail(f"{prefix}.rows_vs_history", "needs weeks >= 1, 1 <= min_weeks <= weeks "
                                                    "and a tolerance > 0 (a fraction, 0.5 = ±50%)")
        history = RowHistory(h.weeks, h.tolerance, h.min_weeks)
    return LandingSource(source, path, (low, high), decl.complete_when, history)


def _reference(name: str, decl: ReferenceDecl, timezone: str, fail) -> ReferenceSource:
    prefix = f"references.{name}"
    if not NAME.match(name):
        raise fail(prefix, "a reference name is lower-case letters, digits and underscores")
    columns = _columns(prefix, decl.columns, timezone, fail)
    _known(f"{prefix}.key", decl.key, decl.columns, fail)
    return ReferenceSource(schema.SourceSchema(name=name, columns=columns, key=tuple(decl.key),
                                               partitioned=False, timezone=timezone),
                           f"reference/{name}.csv")


def _feature_set(attribute: str, columns: list[str] | None, declared: list[str], fail
                 ) -> tuple[str, ...]:
    """A model's declared features: columns of features.columns, each once; none: all."""
    if columns is None:
        return ()
    unknown = [c for c in columns if c not in declared]
    if unknown:
        raise fail(attribute, f"{unknown} are not in features.columns")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise fail(attribute, f"{duplicated} are listed twice")
    if not columns:
        raise fail(attribute, "name at least one feature, or leave it out for all of them")
    return tuple(columns)


def _model(decl: ModelDecl, partitions: PartitionsDecl, declared: list[str], fail
           ) -> ModelSpec:
    for attribute, window in (("training.train", decl.train), ("training.validation",
                                                            decl.validation)):
        if window.end < window.start:
            raise fail(attribute, f"ends ({window.end}) before it starts ({window.start})")
        if window.start < partitions.start or (partitions.end and window.end > partitions.end):
            raise fail(attribute, f"{window.start}..{window.end} is outside the partitions")
    if decl.validation.start <= decl.train.end:
        raise fail("training.validation", f"starts ({decl.validation.start}) before the training "
                                       f"window ends ({decl.train.end}): validate on later data")
    if decl.objective != BINARY and decl.threshold is not None:
        raise fail("training.threshold", f"a {decl.objective} model has no decision threshold")
    threshold = decl.threshold or ThresholdDecl()
    if threshold.policy != "f1" and threshold.value is None:
        raise fail("training.threshold.value", f"policy {threshold.policy} needs a value")
    if threshold.value is not None and not 0 < threshold.value < 1:
        raise fail("training.threshold.value", f"{threshold.value} must be between 0 and 1")
    for attribute, params in (("training.params", decl.params), ("training.challenger.params",
                              decl.challenger.params if decl.challenger else {})):
        reserved = {"objective", "num_threads"} & set(params)
        if reserved:
            raise fail(attribute, f"{sorted(reserved)} are set by the platform "
                                  "(training.objective; BATCH_PLATFORM_SCORING_THREADS)")
    challenger = None
    if decl.challenger is not None:
        c = decl.challenger
        # A challenger's parameters are the champion's, changed where it says.
        challenger = FeatureSet(
            _feature_set("training.challenger.columns", c.columns, declared, fail),
            c.rounds or decl.rounds, {**decl.params, **c.params})
    return ModelSpec(decl.objective, (decl.train.start, decl.train.end),
                     (decl.validation.start, decl.validation.end), decl.rounds,
                     dict(decl.params), ThresholdPolicy(threshold.policy, threshold.value),
                     _feature_set("training.columns", decl.columns, declared, fail), challenger)


def _features(decl: FeaturesDecl, spec: FeatureSpec, folder: Path,
              sources: Mapping[str, LandingSource], references: Mapping[str, ReferenceSource],
              fail) -> Features:
    if decl.rows_from not in sources:
        raise fail("features.rows_from", f"{decl.rows_from!r} is not a declared source "
                                         f"({', '.join(sources)})")
    _known("features.references", decl.references, references, fail)
    outcomes_used = [c for c in spec.feature_columns if c in spec.outcome_columns]
    if outcomes_used:
        raise fail("features.columns", f"{outcomes_used} are outcomes (features.outcomes): "
                                       "known only after the fact, they would leak the answer")
    if spec.label_column in spec.feature_columns or spec.id_column in spec.feature_columns:
        raise fail("features.columns", "the label and the id column cannot be features")
    for attribute, names in (("categorical", spec.categorical_columns),
                             ("drift", spec.drift_columns)):
        unknown = [c for c in names if c not in spec.feature_columns]
        if unknown:
            raise fail(f"features.{attribute}", f"{unknown} are not in features.columns")
    duplicated = sorted({c for c in spec.feature_columns if spec.feature_columns.count(c) > 1})
    if duplicated:
        raise fail("features.columns", f"{duplicated} are listed twice")
    module = _module(folder, decl.module, fail)
    rows = _attribute(module, decl.rows, decl.module, "features.rows", fail)
    context = (_attribute(module, decl.context, decl.module, "features.context", fail)
               if decl.context else None)
    return Features(spec, rows, context, decl.rows_from, decl.lookback_days,
                    tuple(decl.references), str(folder / decl.module))


def check_feature_output(features: Features, sources: Mapping[str, LandingSource],
                         references: Mapping[str, ReferenceSource], fail) -> None:
    """Run the feature functions on empty frames of the declared schemas: the columns they
    produce, and their types, are known before any run starts."""
    spec = features.spec
    day = dt.date(2000, 1, 1)

    def empty(source: schema.SourceSchema, partitioned: bool) -> pl.DataFrame:
        frame = pl.DataFrame(schema=source.polars_schema)
        if partitioned:
            frame = frame.with_columns(pl.lit(None, pl.Date).alias("partition_date"),
                                       *(pl.lit(None, pl.String).alias(c)
                                         for c in LINEAGE_COLUMNS))
        return frame

    try:
        context = (features.context({n: empty(s.schema, True).lazy() for n, s in sources.items()},
                                    {n: empty(r.schema, False) for n, r in references.items()},
                                    day, day) if features.context else None)
        produced = features.rows(empty(sources[features.rows_from].schema, True), context)
    except Exception as err:  # the user's code: any failure is theirs to see, with its cause
        raise fail("features", f"{features.module} failed on empty input: "
                               f"{type(err).__name__}: {err}") from err
    if not isinstance(produced, pl.DataFrame):
        raise fail("features.rows", f"returned {type(produced).__name__}, not a polars DataFrame")
    missing = [c for c in spec.table_columns if c not in produced.columns]
    if missing:
        raise fail("features.columns", f"{features.module} does not produce {missing} "
                                       f"(it produces {', '.join(produced.columns)})")
    text = [c for c in spec.categorical_columns if produced.schema[c] not in (pl.String,)]
    if text:
        raise fail("features.categorical", f"{text} must be text (String), the function "
                   f"gives {', '.join(str(produced.schema[c]) for c in text)}")
    numbers = [c for c in spec.feature_columns if c not in spec.categorical_columns
               and not (produced.schema[c].is_numeric() or produced.schema[c] == pl.Boolean)]
    if numbers:
        raise fail("features.columns", f"{numbers} are neither numbers nor declared "
                                       "categorical (features.categorical)")
    label = produced.schema[spec.label_column]
    if spec.is_binary and label != pl.Boolean:
        raise fail("features.label", f"{spec.label_column} of a binary objective must be "
                                     f"Boolean, the function gives {label}")
    if not spec.is_binary and not label.is_numeric():
        raise fail("features.label", f"{spec.label_column} of a regression must be a number, "
                                     f"the function gives {label}")


def _module(folder: Path, file: str, fail) -> ModuleType:
    path = (folder / file).resolve()
    if not path.is_file():
        raise fail("features.module", f"{path} does not exist")
    dotted = _dotted_name(path)
    try:
        if dotted is not None:
            return importlib.import_module(dotted)
        name = f"batch_platform_use_case_{abs(hash(str(path)))}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    except Exception as err:
        raise fail("features.module", f"{path} cannot be imported: {type(err).__name__}: "
                                      f"{err}") from err


def _dotted_name(path: Path) -> str | None:
    """``a.b.c`` if the file sits in a package importable from ``sys.path``."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.append(folder.name)
        folder = folder.parent
    if len(parts) == 1:
        return None
    roots = {Path(p or ".").resolve() for p in sys.path}
    return ".".join(reversed(parts)) if folder.resolve() in roots else None


def _attribute(module: ModuleType, name: str, file: str, attribute: str, fail) -> Any:
    found = getattr(module, name, None)
    if not callable(found):
        raise fail(attribute, f"{file} has no function {name!r}")
    return found


def _function(folder: Path, reference: str, attribute: str, fail) -> Any:
    match = FUNCTION_REFERENCE.match(reference)
    if not match:
        raise fail(attribute, f"{reference!r} must look like 'module.py:function'")
    module = _module(folder, match.group("file"), fail)
    return _attribute(module, match.group("name"), match.group("file"), attribute, fail)
