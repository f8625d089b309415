"""The Dagster definitions of the project: every declared use case, and the shared resources."""

from __future__ import annotations

import dagster as dg

from batch_platform import catalog
from batch_platform.orchestration.factory import platform_executor, platform_resources
from batch_platform.orchestration.liveness import sweeper_sensor
from batch_platform.orchestration.maintenance import maintenance_definitions
from batch_platform.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    use_cases, _ = catalog.load()
    return dg.Definitions.merge(use_cases, maintenance_definitions(),
                                dg.Definitions(sensors=[sweeper_sensor()],
                                               resources=platform_resources(settings),
                                               executor=platform_executor))


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
