"""The shipped use cases: one folder each, a ``defs.yaml`` and its plain Polars modules.

This package is the project's Dagster defs folder (``[tool.dg.project]`` in pyproject.toml):
every folder with a ``defs.yaml`` here is loaded as a use-case component.
"""
