#!/usr/bin/env python3
"""Checks that Lodestar's feature snapshot and the baseline's output agree on every shared column.

    python3 agree.py FEATURES.parquet BASELINE.parquet
"""
import sys

import polars as pl

COLUMNS = ["is_active", "clicks_total", "clicks_last_week", "active_days_total", "days_since_last_activity",
           "clicks_homepage_total", "clicks_content_total", "clicks_forum_total", "clicks_quiz_total",
           "clicks_other_total", "assessments_due", "assessments_submitted", "assessments_missing",
           "assessments_late", "assessments_banked", "score_mean", "score_weighted"]
keys = ["code_module", "code_presentation", "id_student"]
ours = pl.read_parquet(sys.argv[1])
base = pl.read_parquet(sys.argv[2]).rename({"week": "as_of_week"})
joined = ours.join(base, on=keys + ["as_of_week"], how="full", suffix="_baseline", coalesce=True)
bad = 0
if not (ours.height == base.height == joined.height):
    print(f"row counts differ: lodestar {ours.height}, baseline {base.height}, joined {joined.height}")
    bad += 1
for c in COLUMNS:
    # The baseline fills gaps with 0 and divides 0 by 0 where Lodestar writes null: compare values
    # where both have one, and report (without failing) where only one does.
    a = pl.col(c).cast(pl.Float64).fill_nan(None)
    b = pl.col(c + "_baseline").cast(pl.Float64).fill_nan(None)
    differ = joined.filter((a - b).abs() > 1e-9).height
    one_sided = joined.filter(a.is_null() != b.is_null()).height
    if differ:
        print(f"{c}: {differ} rows differ")
        bad += 1
    if one_sided:
        print(f"{c}: {one_sided} rows have a value on one side only (baseline fills gaps with 0)")
if not bad:
    print(f"outputs agree on {len(COLUMNS)} columns of {ours.height} rows")
sys.exit(1 if bad else 0)
