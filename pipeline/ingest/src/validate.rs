//! Row-by-row validation of the canonical tables: types, ranges, keys and duplicates. A row that
//! breaks a rule gets the reason of the first rule it breaks; such rows are split off into the
//! quarantine and counted, the others go on.

use lodestar_domain::tables::IMD_BANDS;
use lodestar_domain::{ColumnType, FinalResult, Table};
use polars::prelude::*;

use crate::error::{IngestError, PolarsContext};
use crate::read::{LINE, canonical_dtype};

/// Name of the column holding a row's quarantine reason (null for a good row).
pub(crate) const REASON: &str = "__reason";

/// How far outside a presentation dated records may lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DateWindow {
    /// Days before day 0 that registrations, clicks and submissions may be dated.
    pub pre_start_days: i64,
    /// Days after the presentation's last day that clicks and submissions may be dated.
    pub post_end_days: i64,
}

impl Default for DateWindow {
    fn default() -> Self {
        // Genuine OULAD registrations reach 310 days before the start; late submissions and
        // exam-day clicks fall within a month of the end.
        Self {
            pre_start_days: 365,
            post_end_days: 30,
        }
    }
}

/// A condition that makes a row bad, and the reason written for it.
pub(crate) struct Rule {
    bad: Expr,
    reason: Expr,
}

pub(crate) fn rule(bad: Expr, reason: impl Into<String>) -> Rule {
    Rule {
        bad,
        reason: lit(reason.into()),
    }
}

/// A rule whose reason quotes values from the row: `parts` are concatenated.
pub(crate) fn rule_with(bad: Expr, parts: Vec<Expr>) -> Rule {
    Rule {
        bad,
        reason: concat_str(parts, "", true),
    }
}

/// A value as text for a reason.
pub(crate) fn text(e: Expr) -> Expr {
    e.cast(DataType::String).fill_null(lit("(empty)"))
}

fn null_text() -> Expr {
    lit(NULL).cast(DataType::String)
}

/// The reason column: the first failing rule's reason, or null.
pub(crate) fn reason_of(rules: &[Rule]) -> Expr {
    let mut expr = null_text();
    for r in rules.iter().rev() {
        expr = when(r.bad.clone().fill_null(lit(false)))
            .then(r.reason.clone())
            .otherwise(expr);
    }
    expr.alias(REASON)
}

/// True where any rule fails. Cheap: no reason text is built.
pub(crate) fn any_bad(rules: &[Rule]) -> Expr {
    rules
        .iter()
        .map(|r| r.bad.clone().fill_null(lit(false)))
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false))
}

/// Splits `frame` into good rows and bad ones (`__line`, `__reason`), building reason text only
/// for the bad rows.
pub(crate) fn split_by_rules(
    frame: LazyFrame,
    rules: &[Rule],
) -> Result<(DataFrame, DataFrame), IngestError> {
    let marked = frame
        .with_column(any_bad(rules).alias("__bad"))
        .collect()
        .ctx("validating")?;
    let good = marked
        .clone()
        .lazy()
        .filter(col("__bad").not())
        .drop(cols(["__bad"]))
        .collect()
        .ctx("selecting accepted rows")?;
    let bad = marked
        .lazy()
        .filter(col("__bad"))
        .select([col(LINE), reason_of(rules)])
        .collect()
        .ctx("selecting quarantined rows")?;
    Ok((good, bad))
}

fn type_word(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Integer => "an integer",
        ColumnType::Decimal => "a number",
        ColumnType::Text => "text",
    }
}

/// Rules every canonical column brings: present unless nullable, parseable as its type.
pub(crate) fn type_rules(table: Table) -> Vec<Rule> {
    type_rules_except(table, &[])
}

/// [`type_rules`] for every column but `absent` ones (a source that does not carry them writes
/// them empty).
pub(crate) fn type_rules_except(table: Table, absent: &[String]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for c in table
        .columns()
        .iter()
        .filter(|c| !absent.iter().any(|a| a == c.name))
    {
        let value = col(c.name);
        match (c.ty, c.nullable) {
            (ColumnType::Text, false) => rules.push(rule(
                value.clone().is_null().or(value.eq(lit(""))),
                format!("{} is empty", c.name),
            )),
            (ColumnType::Text, true) => {}
            (ty, false) => rules.push(rule(
                value.is_null(),
                format!("{} is missing or not {}", c.name, type_word(ty)),
            )),
            (ty, true) => {
                let parsed = value.clone().cast(canonical_dtype(ty));
                let present = value.clone().is_not_null().and(value.clone().neq(lit("")));
                rules.push(rule_with(
                    parsed.is_null().and(present),
                    vec![
                        lit(format!("{} \"", c.name)),
                        value,
                        lit(format!("\" is not {}", type_word(ty))),
                    ],
                ));
            }
        }
    }
    rules
}

/// Casts the nullable columns read as text to their canonical type (empty text becomes null).
pub(crate) fn canonical_columns(table: Table) -> Vec<Expr> {
    table
        .columns()
        .iter()
        .map(|c| {
            let value = col(c.name);
            match (c.ty, c.nullable) {
                (ColumnType::Text, true) => when(value.clone().eq(lit("")))
                    .then(null_text())
                    .otherwise(value),
                (ty, true) => value.cast(canonical_dtype(ty)),
                _ => value,
            }
            .alias(c.name)
        })
        .collect()
}

/// `value` is outside `[low, high]`, with a reason naming the column and the bounds.
pub(crate) fn outside(column: &str, value: Expr, low: Expr, high: Expr, what: &str) -> Rule {
    rule_with(
        value
            .clone()
            .lt(low.clone())
            .or(value.clone().gt(high.clone())),
        vec![
            lit(format!("{column} ")),
            text(value),
            lit(format!(" is outside {what} [")),
            text(low),
            lit(", "),
            text(high),
            lit("]"),
        ],
    )
}

/// `column` must be one of `allowed`.
pub(crate) fn one_of(column: &str, allowed: &[&str]) -> Rule {
    let list = Series::new("allowed".into(), allowed);
    rule_with(
        col(column).is_in(lit(list).implode(false), false).not(),
        vec![
            lit(format!("{column} \"")),
            col(column),
            lit(format!("\" is not one of {}", allowed.join(", "))),
        ],
    )
}

/// The final results as written in files.
pub(crate) fn final_results() -> Vec<&'static str> {
    FinalResult::ALL.iter().map(|r| r.as_str()).collect()
}

/// Deprivation bands, both spellings of the genuine export.
pub(crate) fn imd_spellings() -> Vec<&'static str> {
    let mut v: Vec<&str> = IMD_BANDS.to_vec();
    v.push("10-20");
    v
}

/// Splits `frame` (which has [`REASON`]) into good rows (reason dropped) and bad ones
/// (`__line`, `__reason`).
pub(crate) fn split(frame: DataFrame) -> Result<(DataFrame, DataFrame), IngestError> {
    let lazy = frame.lazy();
    let bad = lazy
        .clone()
        .filter(col(REASON).is_not_null())
        .select([col(LINE), col(REASON)])
        .collect()
        .ctx("selecting quarantined rows")?;
    let good = lazy
        .filter(col(REASON).is_null())
        .drop(cols([REASON]))
        .collect()
        .ctx("selecting accepted rows")?;
    Ok((good, bad))
}

/// Marks every row whose `keys` repeat an earlier line's as a duplicate of that line.
pub(crate) fn duplicates(
    frame: DataFrame,
    keys: &[&str],
) -> Result<(DataFrame, DataFrame), IngestError> {
    let key_exprs: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    let first = col(LINE).min().over(&key_exprs).ctx("duplicate window")?;
    let frame = frame
        .lazy()
        .with_column(
            when(col(LINE).neq(first.clone()))
                .then(concat_str(
                    [
                        lit("duplicate of line "),
                        first.cast(DataType::String),
                        lit(format!(" (same {})", keys.join(", "))),
                    ],
                    "",
                    true,
                ))
                .otherwise(null_text())
                .alias(REASON),
        )
        .collect()
        .ctx("finding duplicates")?;
    split(frame)
}
