//! The weekly feature table: one row per (student, presentation, as-of week k) for k from 0 to
//! the presentation's last week (a running presentation: to its current week, the last one
//! complete on the export's as-of day), computed only from records dated on or before day 7k+6.
//!
//! Built from weekly increments and cumulative sums per student, so the cost is linear in the
//! number of students and weeks. Week -1 gathers everything before the presentation starts; it
//! counts towards the cumulative features of every week and is "last week" for week 0.
//! A submission's score is taken as known on the day it was submitted (OULAD records no marking
//! date).

use lodestar_domain::{ActivityFamily, FeatureSchema, LabelRule};
use polars::prelude::*;

use crate::error::{IngestError, PolarsContext};
use crate::load::{LAST_WEEK_COLUMN, LoadedExport, family_column};

/// Identifying columns of a feature row (beside the features).
pub const KEY_COLUMNS: [&str; 3] = ["code_module", "code_presentation", "id_student"];
/// 1 when the student is still registered at the end of the row's week (not unregistered on or
/// before the cutoff day): only such rows are scored and evaluated.
pub const ACTIVE_COLUMN: &str = "is_active";
/// The outcome, kept beside the features: the final result as written in the export.
pub const RESULT_COLUMN: &str = "final_result";
/// The label: 1 when the final result counts as at risk under the label rule.
pub const LABEL_COLUMN: &str = "label_at_risk";

/// A left join that keeps the left frame's row order: the grid is built student by student, week
/// by week, which the per-student running sums rely on.
fn keep_left_order() -> JoinArgs {
    JoinArgs {
        maintain_order: MaintainOrderJoin::Left,
        ..JoinArgs::new(JoinType::Left)
    }
}

/// Integer key of a student in a presentation (joins and windows on several keys are slow).
fn student_key() -> Expr {
    (col("id_student") * lit(4096i64) + col("presentation_index").cast(DataType::Int64))
        .alias("__sk")
}

/// `key` and a week packed into one integer (weeks -1..=254).
fn with_week(key: Expr, week: Expr) -> Expr {
    key * lit(256i64) + week + lit(1i64)
}

/// Cumulative sum of `e` within each student's rows. Each student's rows are contiguous in week
/// order (checked in [`build_features`]) and start at week -1, so a global running sum minus its value just before
/// the student's first row gives the per-student sum without hashing any keys.
fn per_student_sum(e: Expr) -> Expr {
    let running = e.clone().cum_sum(false);
    let before_first = when(col("week").eq(lit(-1i64)))
        .then(running.clone() - e)
        .otherwise(lit(NULL))
        .fill_null_with_strategy(FillNullStrategy::Forward(None));
    running - before_first
}

/// Running maximum of `e` (values above -10^7) within each student's rows: every student's
/// values are lifted by a multiple of 10^8 larger than any earlier student's.
fn per_student_max(e: Expr) -> Expr {
    let lift = col("__student_no") * lit(100_000_000i64);
    (e + lift.clone()).cum_max(false) - lift
}

/// The value `n` weeks earlier for the same student (null before the student's week -1).
fn weeks_earlier(e: Expr, n: i64) -> Expr {
    when(col("week").gt_eq(lit(n - 1)))
        .then(e.shift(lit(n)))
        .otherwise(lit(NULL))
}

/// Week of a day, with every day before the start in week -1.
fn week_of(day: Expr) -> Expr {
    when(day.clone().lt(lit(0)))
        .then(lit(-1i64))
        .otherwise(day.floor_div(lit(7i64)))
}

fn ratio(num: Expr, den: Expr) -> Expr {
    when(den.clone().gt(lit(0)))
        .then(num.cast(DataType::Float64) / den.cast(DataType::Float64))
        .otherwise(lit(NULL).cast(DataType::Float64))
}

fn ordinal(column: &str, values: &[&str]) -> Expr {
    let mut e = lit(NULL).cast(DataType::Int64);
    for (i, v) in values.iter().enumerate().rev() {
        e = when(col(column).eq(lit(*v)))
            .then(lit(i as i64))
            .otherwise(e);
    }
    e
}

/// Builds the feature table from validated tables.
pub fn build_features(export: &LoadedExport, label: &LabelRule) -> Result<DataFrame, IngestError> {
    let keys_week = [col("__skw")];

    // Weekly activity.
    let mut sums = vec![
        col("clicks").sum(),
        // A day may come in more than one partial row (see `LoadedExport::daily_activity`).
        col("date")
            .n_unique()
            .cast(DataType::Int64)
            .alias("active_days"),
        col("date").max().alias("last_day"),
    ];
    sums.extend(
        ActivityFamily::ALL
            .iter()
            .map(|f| col(family_column(*f)).sum()),
    );
    let weekly = export
        .daily_activity
        .clone()
        .lazy()
        .with_column(week_of(col("date")).alias("week"))
        .with_column(with_week(student_key(), col("week")).alias("__skw"))
        .group_by(keys_week.clone())
        .agg(sums);

    // Submissions as weekly events: counted as submitted-and-due from the later of the two weeks.
    let subs = export.submissions.clone().lazy().with_columns([
        week_of(col("date_submitted")).alias("__sw"),
        student_key(),
        week_of(col("due_day")).alias("__dw"),
    ]);
    let subs = subs.with_column(
        when(col("__sw").gt(col("__dw")))
            .then(col("__sw"))
            .otherwise(col("__dw"))
            .alias("__ew"),
    );
    let on_due = subs
        .clone()
        .group_by([with_week(col("__sk"), col("__ew")).alias("__skw")])
        .agg([
            len().cast(DataType::Int64).alias("submitted_n"),
            when(col("assessment_type").neq(lit("Exam")))
                .then(col("weight") * col("score").fill_null(lit(0.0)).cast(DataType::Float64))
                .otherwise(lit(0.0))
                .sum()
                .alias("wnum"),
        ]);
    let on_submit = subs
        .group_by([with_week(col("__sk"), col("__sw")).alias("__skw")])
        .agg([
            col("date_submitted")
                .gt(col("due_day"))
                .cast(DataType::Int64)
                .sum()
                .alias("late_n"),
            col("is_banked").sum().alias("banked_n"),
            col("score")
                .cast(DataType::Float64)
                .sum()
                .alias("score_sum"),
            col("score")
                .is_not_null()
                .cast(DataType::Int64)
                .sum()
                .alias("score_n"),
        ]);
    let due = export
        .assessments
        .clone()
        .lazy()
        .with_column(week_of(col("due_day")).alias("week"))
        .group_by([
            with_week(col("presentation_index").cast(DataType::Int64), col("week")).alias("__pw"),
        ])
        .agg([
            len().cast(DataType::Int64).alias("due_n"),
            when(col("assessment_type").neq(lit("Exam")))
                .then(col("weight"))
                .otherwise(lit(0.0))
                .sum()
                .alias("wden"),
        ]);

    let at_risk: Vec<&str> = label.at_risk.iter().map(|r| r.as_str()).collect();
    let at_risk = Series::new("at_risk".into(), at_risk.as_slice());
    // One row per registered student and week -1..=last week.
    let max_weeks = export
        .courses
        .column("module_presentation_length")
        .ctx("course lengths")?
        .i64()
        .ctx("course lengths")?
        .max()
        .unwrap_or(0);
    let weeks =
        df!("week" => (-1..=((max_weeks - 1).max(0) / 7)).collect::<Vec<i64>>()).ctx("weeks")?;
    let grid = export
        .registrations
        .clone()
        .lazy()
        .join(
            export.courses.clone().lazy().select([
                col("presentation_index"),
                col("module_presentation_length"),
                col(LAST_WEEK_COLUMN),
            ]),
            [col("presentation_index")],
            [col("presentation_index")],
            JoinArgs::new(JoinType::Inner),
        )
        .join(
            export.students.clone().lazy(),
            KEY_COLUMNS.map(col),
            KEY_COLUMNS.map(col),
            JoinArgs::new(JoinType::Inner),
        )
        .with_column(student_key())
        // Attributes are per student: encode them once, before the grid multiplies the rows.
        .with_columns([
            (lit(0i64) - col("date_registration"))
                .cast(DataType::Float64)
                .alias("days_registered_before_start"),
            ordinal(
                "highest_education",
                &[
                    "No Formal quals",
                    "Lower Than A Level",
                    "A Level or Equivalent",
                    "HE Qualification",
                    "Post Graduate Qualification",
                ],
            )
            .alias("highest_education"),
            col("disability")
                .eq(lit("Y"))
                .cast(DataType::Int64)
                .alias("disability"),
            ordinal("age_band", &["0-35", "35-55", "55<="]).alias("age_band"),
            ordinal("imd_band", &lodestar_domain::tables::IMD_BANDS).alias("imd_band"),
            // No outcome yet (a running presentation): no label.
            when(col(RESULT_COLUMN).is_null())
                .then(lit(NULL).cast(DataType::Int64))
                .otherwise(
                    col(RESULT_COLUMN)
                        .is_in(lit(at_risk).implode(false), false)
                        .cast(DataType::Int64),
                )
                .alias(LABEL_COLUMN),
        ])
        .cross_join(weeks.lazy(), None)
        // A finished presentation's last week; a running one's current week (nothing beyond
        // the export's as-of day; -1 before week 0 is complete, which keeps week -1 alone).
        .filter(
            col("week")
                .lt_eq((col("module_presentation_length") - lit(1i64)).floor_div(lit(7i64)))
                .and(col("week").lt_eq(col(LAST_WEEK_COLUMN))),
        );

    let grid = grid.with_columns([
        with_week(col("__sk"), col("week")).alias("__skw"),
        with_week(col("presentation_index").cast(DataType::Int64), col("week")).alias("__pw"),
    ]);
    let week_keys = [col("__pw")];
    let mut frame = grid
        .join(
            weekly,
            keys_week.clone(),
            keys_week.clone(),
            keep_left_order(),
        )
        .join(
            on_due,
            keys_week.clone(),
            keys_week.clone(),
            keep_left_order(),
        )
        .join(
            on_submit,
            keys_week.clone(),
            keys_week.clone(),
            keep_left_order(),
        )
        .join(due, week_keys.clone(), week_keys, keep_left_order());
    let mut zero_fill = vec![
        "clicks",
        "active_days",
        "submitted_n",
        "late_n",
        "banked_n",
        "score_n",
        "due_n",
    ]
    .into_iter()
    .map(|c| col(c).fill_null(lit(0i64)))
    .collect::<Vec<_>>();
    zero_fill.extend(["wnum", "wden", "score_sum"].map(|c| col(c).fill_null(lit(0.0))));
    zero_fill.extend(
        ActivityFamily::ALL
            .iter()
            .map(|f| col(family_column(*f)).fill_null(lit(0i64))),
    );
    // The running sums below need each student's rows together in week order. The grid is built
    // that way and the joins keep the left order; check it (cheap) and sort if it ever is not.
    let joined = frame
        .with_columns(zero_fill)
        .collect()
        .ctx("joining weekly tables")?;
    let follows = col("week").eq(lit(-1i64)).or(col("week")
        .eq(col("week").shift(lit(1)) + lit(1i64))
        .and(col("__sk").eq(col("__sk").shift(lit(1)))));
    let in_order = joined
        .clone()
        .lazy()
        .select([follows.fill_null(lit(false)).all(true).alias("ok")])
        .collect()
        .ctx("checking row order")?
        .column("ok")
        .ctx("checking row order")?
        .bool()
        .ctx("checking row order")?
        .get(0)
        .unwrap_or(false);
    let joined = if in_order || joined.height() == 0 {
        joined
    } else {
        joined
            .sort(["__skw"], SortMultipleOptions::default())
            .ctx("sorting by student and week")?
    };
    frame = joined.lazy().with_column(
        col("week")
            .eq(lit(-1i64))
            .cast(DataType::Int64)
            .cum_sum(false)
            .alias("__student_no"),
    );

    // Cumulative state per student.
    let cutoff = lit(7i64) * col("week") + lit(6i64);
    let mut cumulative = vec![
        per_student_sum(col("clicks")).alias("clicks_total"),
        weeks_earlier(col("clicks"), 1)
            .fill_null(lit(0i64))
            .alias("clicks_last_week"),
        per_student_sum(col("active_days")).alias("active_days_total"),
        per_student_max(col("last_day").fill_null(lit(-1_000_000i64))).alias("__last_active"),
        per_student_sum(
            when(col("week").gt_eq(lit(0)))
                .then(col("clicks"))
                .otherwise(lit(0i64)),
        )
        .alias("__clicks_since_start"),
        per_student_sum(col("due_n")).alias("assessments_due"),
        per_student_sum(col("submitted_n")).alias("assessments_submitted"),
        per_student_sum(col("late_n")).alias("assessments_late"),
        per_student_sum(col("banked_n")).alias("assessments_banked"),
        per_student_sum(col("score_sum")).alias("__score_sum"),
        per_student_sum(col("score_n")).alias("__score_n"),
        per_student_sum(col("wnum")).alias("__wnum"),
        per_student_sum(col("wden")).alias("__wden"),
        col("date_unregistration")
            .is_null()
            .or(col("date_unregistration").gt(cutoff.clone()))
            .cast(DataType::Int64)
            .alias(ACTIVE_COLUMN),
    ];
    for f in ActivityFamily::ALL {
        cumulative.push(per_student_sum(col(family_column(f))).alias(format!("clicks_{f}_total")));
    }
    frame = frame.with_columns(cumulative);

    let recent = (col("clicks") + col("clicks_last_week")).cast(DataType::Float64) / lit(2.0);
    let earlier = when(col("week").gt_eq(lit(2)))
        .then(
            weeks_earlier(col("__clicks_since_start"), 2).cast(DataType::Float64)
                / (col("week") - lit(1)).cast(DataType::Float64),
        )
        .otherwise(lit(NULL).cast(DataType::Float64));
    frame = frame.with_columns([
        recent.clone().alias("__recent"),
        earlier.alias("__earlier"),
        when(col("__last_active").gt(lit(-999_999i64)))
            .then(cutoff.clone() - col("__last_active"))
            .otherwise(cutoff.clone() - col("date_registration"))
            .cast(DataType::Float64)
            .alias("days_since_last_activity"),
    ]);
    let cohort_median = when(col(ACTIVE_COLUMN).eq(lit(1)))
        .then(col("__recent"))
        .otherwise(lit(NULL).cast(DataType::Float64))
        .median()
        .over([col("__pw")])
        .ctx("cohort median")?;
    frame = frame.with_columns([
        col("week").alias("as_of_week"),
        col("clicks").alias("clicks_this_week"),
        col("active_days").alias("active_days_this_week"),
        ((col("__recent") + lit(1.0)) / (col("__earlier") + lit(1.0))).alias("trend_vs_own"),
        ((col("__recent") + lit(1.0)) / (cohort_median + lit(1.0))).alias("trend_vs_cohort"),
        (col("assessments_due") - col("assessments_submitted")).alias("assessments_missing"),
        ratio(col("__score_sum"), col("__score_n")).alias("score_mean"),
        ratio(col("__wnum"), col("__wden")).alias("score_weighted"),
    ]);

    // Features a source cannot supply are absent, not filled in.
    let schema = FeatureSchema::standard().without(&export.absent);
    let mut columns: Vec<Expr> = KEY_COLUMNS.iter().map(|c| col(*c)).collect();
    columns.push(col(ACTIVE_COLUMN));
    columns.extend(schema.names().map(col));
    columns.push(col(RESULT_COLUMN));
    columns.push(col(LABEL_COLUMN));
    frame
        .filter(col("week").gt_eq(lit(0)))
        .select(columns)
        .collect()
        .ctx("computing features")
}

/// Builds the feature table one presentation at a time (features never cross presentations), so
/// memory and time grow linearly with the number of presentations; each part goes to `sink`.
pub fn build_features_by_presentation(
    export: &LoadedExport,
    label: &LabelRule,
    sink: &mut dyn FnMut(DataFrame) -> Result<(), IngestError>,
) -> Result<(), IngestError> {
    let courses = &export.courses;
    let modules = courses
        .column("code_module")
        .ctx("presentations")?
        .str()
        .ctx("presentations")?
        .clone();
    let codes = courses
        .column("code_presentation")
        .ctx("presentations")?
        .str()
        .ctx("presentations")?
        .clone();
    let indexes = courses
        .column("presentation_index")
        .ctx("presentations")?
        .cast(&DataType::UInt64)
        .ctx("presentations")?
        .u64()
        .ctx("presentations")?
        .clone();
    for ((module, code), index) in modules.iter().zip(codes.iter()).zip(indexes.iter()) {
        let (Some(module), Some(code), Some(index)) = (module, code, index) else {
            continue;
        };
        let this = |df: &DataFrame| -> Result<DataFrame, IngestError> {
            df.clone()
                .lazy()
                .filter(
                    col("presentation_index")
                        .cast(DataType::UInt64)
                        .eq(lit(index)),
                )
                .collect()
                .ctx("selecting a presentation")
        };
        let part = LoadedExport {
            courses: this(courses)?,
            assessments: this(&export.assessments)?,
            vle: export.vle.clone(),
            students: export
                .students
                .clone()
                .lazy()
                .filter(
                    col("code_module")
                        .eq(lit(module))
                        .and(col("code_presentation").eq(lit(code))),
                )
                .collect()
                .ctx("selecting a presentation")?,
            registrations: this(&export.registrations)?,
            submissions: this(&export.submissions)?,
            daily_activity: this(&export.daily_activity)?,
            counts: Vec::new(),
            absent: export.absent.clone(),
            terms: Vec::new(),
        };
        let features = build_features(&part, label)?;
        if features.height() > 0 {
            sink(features)?;
        }
    }
    Ok(())
}
