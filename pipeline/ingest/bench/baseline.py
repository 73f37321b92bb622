#!/usr/bin/env python3
"""The straightforward python polars version of Lodestar's weekly features, for the benchmark.

It reads an OULAD-schema export and computes the same per (student, presentation, week)
aggregation as `lodestar ingest` (clicks cumulative / this week / last week / per activity family,
active days, days since last activity, assessments due / submitted / missing / late, mean and
weighted score), the way a data team would write it: eager reads, joins, group-bys and window
cumulative sums. It does no validation, no quarantine and no trends, so it does less work than
Lodestar does.

    python3 baseline.py EXPORT_DIR OUT.parquet
"""
import os
import sys
import time

import polars as pl

FAMILIES = {
    "homepage": ["homepage"],
    "content": ["oucontent", "resource", "page", "subpage", "url", "folder", "dualpane", "htmlactivity",
                "sharedsubpage", "dataplus", "glossary"],
    "forum": ["forumng", "ouwiki", "oucollaborate", "ouelluminate"],
    "quiz": ["quiz", "externalquiz", "questionnaire", "repeatactivity"],
}


def read(export, name):
    path = os.path.join(export, name + ".csv")
    if not os.path.exists(path):
        path += ".gz"
    return pl.read_csv(path, infer_schema_length=10000, null_values=[""])


def week_of(c):
    return pl.when(c < 0).then(-1).otherwise(c // 7)


def main():
    export, out = sys.argv[1], sys.argv[2]
    t0 = time.time()
    courses = read(export, "courses")
    assessments = read(export, "assessments")
    vle = read(export, "vle")
    info = read(export, "studentInfo")
    reg = read(export, "studentRegistration")
    sa = read(export, "studentAssessment")
    clicks = read(export, "studentVle")
    keys = ["code_module", "code_presentation", "id_student"]

    family = pl.lit("other")
    for name, types in FAMILIES.items():
        family = pl.when(pl.col("activity_type").is_in(types)).then(pl.lit(name)).otherwise(family)
    vle = vle.with_columns(family.alias("family")).select(["id_site", "family"])
    clicks = clicks.join(vle, on="id_site", how="left")
    daily = clicks.group_by(keys + ["date"]).agg(
        [pl.col("sum_click").sum().alias("clicks")]
        + [pl.col("sum_click").filter(pl.col("family") == f).sum().alias(f"clicks_{f}") for f in list(FAMILIES) + ["other"]]
    )
    weekly = daily.with_columns(week_of(pl.col("date")).alias("week")).group_by(keys + ["week"]).agg(
        [pl.col("clicks").sum(), pl.len().alias("active_days"), pl.col("date").max().alias("last_day")]
        + [pl.col(f"clicks_{f}").sum() for f in list(FAMILIES) + ["other"]]
    )

    assessments = assessments.join(courses, on=["code_module", "code_presentation"]).with_columns(
        pl.col("date").fill_null(pl.col("module_presentation_length")).alias("due_day"))
    subs = sa.join(assessments, on="id_assessment").with_columns(
        week_of(pl.col("date_submitted")).alias("sw"), week_of(pl.col("due_day")).alias("dw"))
    subs = subs.with_columns(pl.max_horizontal("sw", "dw").alias("ew"))
    on_due = subs.group_by(keys + [pl.col("ew").alias("week")]).agg(
        pl.len().alias("submitted_n"),
        (pl.when(pl.col("assessment_type") != "Exam").then(pl.col("weight") * pl.col("score").fill_null(0)).otherwise(0)).sum().alias("wnum"))
    on_submit = subs.group_by(keys + [pl.col("sw").alias("week")]).agg(
        (pl.col("date_submitted") > pl.col("due_day")).sum().alias("late_n"),
        pl.col("is_banked").sum().alias("banked_n"),
        pl.col("score").sum().alias("score_sum"),
        pl.col("score").is_not_null().sum().alias("score_n"))
    due = assessments.with_columns(week_of(pl.col("due_day")).alias("week")).group_by(
        ["code_module", "code_presentation", "week"]).agg(
        pl.len().alias("due_n"),
        pl.when(pl.col("assessment_type") != "Exam").then(pl.col("weight")).otherwise(0).sum().alias("wden"))

    weeks = pl.DataFrame({"week": list(range(-1, 60))})
    grid = (reg.join(courses, on=["code_module", "code_presentation"]).join(info, on=keys)
            .join(weeks, how="cross")
            .filter(pl.col("week") <= (pl.col("module_presentation_length") - 1) // 7))
    df = (grid.join(weekly, on=keys + ["week"], how="left")
          .join(on_due, on=keys + ["week"], how="left")
          .join(on_submit, on=keys + ["week"], how="left")
          .join(due, on=["code_module", "code_presentation", "week"], how="left")
          .with_columns(pl.col("last_day").fill_null(-10**6), pl.col("date_unregistration").fill_null(10**9))
          .fill_null(0)
          .sort(keys + ["week"]))
    cutoff = pl.col("week") * 7 + 6
    df = df.with_columns(
        pl.col("clicks").cum_sum().over(keys).alias("clicks_total"),
        pl.col("clicks").shift(1).over(keys).fill_null(0).alias("clicks_last_week"),
        pl.col("active_days").cum_sum().over(keys).alias("active_days_total"),
        pl.col("last_day").cum_max().over(keys).alias("last_active"),
        *[pl.col(f"clicks_{f}").cum_sum().over(keys).alias(f"clicks_{f}_total") for f in list(FAMILIES) + ["other"]],
        pl.col("due_n").cum_sum().over(keys).alias("assessments_due"),
        pl.col("submitted_n").cum_sum().over(keys).alias("assessments_submitted"),
        pl.col("late_n").cum_sum().over(keys).alias("assessments_late"),
        pl.col("banked_n").cum_sum().over(keys).alias("assessments_banked"),
        (pl.col("score_sum").cum_sum().over(keys) / pl.col("score_n").cum_sum().over(keys)).alias("score_mean"),
        (pl.col("wnum").cum_sum().over(keys) / pl.col("wden").cum_sum().over(keys)).alias("score_weighted"),
        (pl.col("date_unregistration") > cutoff).alias("is_active"),
    ).with_columns(
        pl.when(pl.col("last_active") > -10**6).then(cutoff - pl.col("last_active"))
        .otherwise(cutoff - pl.col("date_registration")).alias("days_since_last_activity"),
        (pl.col("assessments_due") - pl.col("assessments_submitted")).alias("assessments_missing"),
    ).filter(pl.col("week") >= 0)
    df.write_parquet(out)
    print(f"{df.height} rows in {time.time() - t0:.2f} s")


if __name__ == "__main__":
    main()
