//! From named feature values to the model's input vector: the checks a caller's row must pass,
//! one-hot encoding of categories, imputation of missing values with training medians, and
//! standardisation with training means and deviations. Fitted once on the training rows and
//! applied identically in training, batch scoring and the API.

use std::collections::BTreeMap;

use lodestar_domain::FeatureKind;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// One value of a feature row as a caller sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number (counts, ordinals, binaries and measures).
    Number(f64),
    /// A category, as written in the export.
    Text(String),
}

/// A student's features by name; `None` (JSON `null`) is a missing value.
pub type FeatureRow = BTreeMap<String, Option<Value>>;

/// One input column of the model, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputColumn {
    /// Feature name.
    pub name: String,
    /// Encoding.
    pub kind: FeatureKind,
    /// For a categorical column, the categories seen in training (one-hot, in this order; an
    /// unseen category encodes as all zeros).
    #[serde(default)]
    pub categories: Vec<String>,
}

impl InputColumn {
    /// Width of the column once encoded.
    pub fn width(&self) -> usize {
        if self.kind == FeatureKind::Categorical {
            self.categories.len()
        } else {
            1
        }
    }

    /// Whether a missing value is allowed (only counts must always be present).
    pub fn nullable(&self) -> bool {
        self.kind != FeatureKind::Count
    }
}

/// One raw cell, before imputation: a number (NaN when missing) or a category index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// A numeric value; NaN is missing.
    Num(f64),
    /// A category: its index among the column's categories, `None` when unseen or missing.
    Cat(Option<usize>),
}

/// The fitted encoding of the model's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    /// Input columns, in order.
    pub columns: Vec<InputColumn>,
    /// Value used for a missing entry, per encoded column (training median).
    pub impute: Vec<f64>,
    /// Per encoded column: subtracted before scaling (0 when not standardised).
    pub mean: Vec<f64>,
    /// Per encoded column: divided by (1 when not standardised).
    pub scale: Vec<f64>,
}

impl Encoder {
    /// Width of the encoded vector.
    pub fn width(&self) -> usize {
        self.columns.iter().map(InputColumn::width).sum()
    }

    /// Encoded names: a categorical column `c` with category `v` becomes `c=v`.
    pub fn encoded_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        for c in &self.columns {
            if c.kind == FeatureKind::Categorical {
                names.extend(c.categories.iter().map(|v| format!("{}={v}", c.name)));
            } else {
                names.push(c.name.clone());
            }
        }
        names
    }

    /// Writes the raw encoding (missing numbers stay NaN) of the row whose cells `cell` gives.
    pub fn encode_raw_into(&self, cell: impl Fn(usize) -> Cell, out: &mut [f64]) {
        let mut at = 0;
        for (i, c) in self.columns.iter().enumerate() {
            match cell(i) {
                Cell::Num(v) => {
                    out[at] = v;
                    at += 1;
                }
                Cell::Cat(index) => {
                    let w = c.width();
                    out[at..at + w].iter_mut().for_each(|x| *x = 0.0);
                    if let Some(k) = index.filter(|k| *k < w) {
                        out[at + k] = 1.0;
                    }
                    at += w;
                }
            }
        }
    }

    /// Imputes and standardises an encoded vector in place.
    pub fn finish(&self, x: &mut [f64]) {
        for (j, v) in x.iter_mut().enumerate() {
            *v = self.finish_one(j, *v);
        }
    }

    /// The finished value of raw value `v` in encoded column `j` (as [`Encoder::finish`]).
    #[inline]
    pub fn finish_one(&self, j: usize, v: f64) -> f64 {
        let v = if v.is_nan() { self.impute[j] } else { v };
        (v - self.mean[j]) / self.scale[j]
    }

    /// Fits imputation (medians) and, when `standardise`, means and deviations on a row-major
    /// raw matrix of `width()` columns.
    pub fn fit(columns: Vec<InputColumn>, raw: &[f64], standardise: bool) -> Encoder {
        let width: usize = columns.iter().map(InputColumn::width).sum();
        let rows = raw.len().checked_div(width).unwrap_or(0);
        let mut impute = vec![0.0; width];
        let mut mean = vec![0.0; width];
        let mut scale = vec![1.0; width];
        let mut values = Vec::with_capacity(rows);
        for j in 0..width {
            values.clear();
            values.extend(
                (0..rows)
                    .map(|r| raw[r * width + j])
                    .filter(|v| !v.is_nan()),
            );
            impute[j] = median(&mut values);
            if standardise {
                let n = rows.max(1) as f64;
                let filled = |r: usize| {
                    let v = raw[r * width + j];
                    if v.is_nan() { impute[j] } else { v }
                };
                let m = (0..rows).map(filled).sum::<f64>() / n;
                let var = (0..rows).map(|r| (filled(r) - m).powi(2)).sum::<f64>() / n;
                mean[j] = m;
                scale[j] = if var > 1e-12 { var.sqrt() } else { 1.0 };
            }
        }
        Encoder {
            columns,
            impute,
            mean,
            scale,
        }
    }

    /// Checks a caller's row against the columns and returns its cells; every problem (unknown,
    /// missing or mistyped field) is named. `ignored` fields (identifiers) are allowed.
    pub fn cells_of(&self, row: &FeatureRow, ignored: &[&str]) -> Result<Vec<Cell>, ModelError> {
        let mut problems = Vec::new();
        for name in row.keys() {
            if !ignored.contains(&name.as_str()) && !self.columns.iter().any(|c| &c.name == name) {
                problems.push(format!("unknown field `{name}`"));
            }
        }
        let mut cells = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let cell = match (row.get(&c.name), c.kind) {
                (None, _) => {
                    problems.push(format!("missing field `{}`", c.name));
                    continue;
                }
                (Some(None), FeatureKind::Categorical) => Cell::Cat(None),
                (Some(None), _) if c.nullable() => Cell::Num(f64::NAN),
                (Some(None), _) => {
                    problems.push(format!("field `{}` is a count and may not be null", c.name));
                    continue;
                }
                (Some(Some(Value::Text(t))), FeatureKind::Categorical) => {
                    Cell::Cat(c.categories.iter().position(|v| v == t))
                }
                (Some(Some(Value::Number(_))), FeatureKind::Categorical) => {
                    problems.push(format!(
                        "field `{}` must be text (one of the categories), not a number",
                        c.name
                    ));
                    continue;
                }
                (Some(Some(Value::Text(_))), _) => {
                    problems.push(format!("field `{}` must be a number, not text", c.name));
                    continue;
                }
                (Some(Some(Value::Number(v))), kind) => {
                    if !v.is_finite() {
                        problems.push(format!("field `{}` must be finite", c.name));
                        continue;
                    }
                    let ok = match kind {
                        FeatureKind::Count => *v >= 0.0 && v.fract() == 0.0,
                        FeatureKind::Binary => *v == 0.0 || *v == 1.0,
                        FeatureKind::Ordinal => *v >= 0.0 && v.fract() == 0.0,
                        _ => true,
                    };
                    if !ok {
                        problems.push(format!(
                            "field `{}` = {v} is not a valid {}",
                            c.name,
                            match kind {
                                FeatureKind::Count => "count (a non-negative whole number)",
                                FeatureKind::Binary => "binary value (0 or 1)",
                                _ => "ordinal (a non-negative whole number)",
                            }
                        ));
                        continue;
                    }
                    Cell::Num(*v)
                }
            };
            cells.push(cell);
        }
        if problems.is_empty() {
            Ok(cells)
        } else {
            Err(ModelError::Schema(problems))
        }
    }

    /// The encoded, imputed and standardised vector of checked cells.
    pub fn vector(&self, cells: &[Cell]) -> Vec<f64> {
        let mut x = vec![0.0; self.width()];
        self.encode_raw_into(|i| cells[i], &mut x);
        self.finish(&mut x);
        x
    }
}

/// Median of `values` (reordered); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<InputColumn> {
        vec![
            InputColumn {
                name: "clicks".into(),
                kind: FeatureKind::Count,
                categories: vec![],
            },
            InputColumn {
                name: "score".into(),
                kind: FeatureKind::Numeric,
                categories: vec![],
            },
            InputColumn {
                name: "gender".into(),
                kind: FeatureKind::Categorical,
                categories: vec!["F".into(), "M".into()],
            },
        ]
    }

    #[test]
    fn fit_imputes_medians_and_standardises() {
        // rows: [clicks, score, F, M]
        let raw = [
            1.0,
            f64::NAN,
            1.0,
            0.0,
            3.0,
            50.0,
            0.0,
            1.0,
            5.0,
            70.0,
            1.0,
            0.0,
        ];
        let e = Encoder::fit(columns(), &raw, true);
        assert_eq!(e.width(), 4);
        assert_eq!(e.impute[1], 60.0);
        assert_eq!(e.mean[0], 3.0);
        assert!((e.scale[0] - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(
            e.mean[1], 60.0,
            "the missing score is imputed before the mean"
        );
        let e = Encoder::fit(columns(), &raw, false);
        assert_eq!((e.mean[0], e.scale[0]), (0.0, 1.0));
        assert_eq!(
            e.encoded_names(),
            ["clicks", "score", "gender=F", "gender=M"]
        );
    }

    #[test]
    fn rows_are_checked_field_by_field() {
        let e = Encoder::fit(columns(), &[0.0; 4], false);
        let mut row = FeatureRow::new();
        row.insert("clicks".into(), Some(Value::Number(-1.0)));
        row.insert("score".into(), Some(Value::Text("high".into())));
        row.insert("colour".into(), Some(Value::Text("red".into())));
        row.insert("id_student".into(), Some(Value::Number(7.0)));
        let Err(ModelError::Schema(problems)) = e.cells_of(&row, &["id_student"]) else {
            panic!("accepted a bad row");
        };
        assert_eq!(
            problems,
            [
                "unknown field `colour`",
                "field `clicks` = -1 is not a valid count (a non-negative whole number)",
                "field `score` must be a number, not text",
                "missing field `gender`",
            ]
        );
        let mut row = FeatureRow::new();
        row.insert("clicks".into(), Some(Value::Number(2.0)));
        row.insert("score".into(), None);
        row.insert("gender".into(), Some(Value::Text("M".into())));
        let cells = e.cells_of(&row, &[]).unwrap();
        let x = e.vector(&cells);
        assert_eq!(x, [2.0, 0.0, 0.0, 1.0]);
    }
}
