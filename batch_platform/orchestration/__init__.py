"""The thin Dagster shell: assets, jobs and resources wiring ``batch_platform.core``."""

import warnings

import dagster as dg

# Single-run backfill policies are what make a range one run; their beta label is noise here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
