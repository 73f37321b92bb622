//! A feature snapshot in memory, column by column: the raw feature values, who and when each row
//! is, whether the student is still registered, the label, and the protected groups used by
//! fairness reports (as readable labels).
//!
//! A snapshot of a whole faculty has about a million rows, so text is held once per distinct value
//! ([`Categories`]) rather than as a string per row, and the Parquet file is read a column at a
//! time rather than decoded whole beside the snapshot.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use lodestar_domain::features::ProtectedAttribute;
use lodestar_domain::{FeatureKind, FeatureSchema, PresentationTerm};
use lodestar_ingest::features::{ACTIVE_COLUMN, LABEL_COLUMN};
use lodestar_ingest::snapshot::{FEATURES_FILE, read_manifest};
use lodestar_model::encode::Cell;
use polars::prelude::*;

use crate::TrainError;

/// One feature column's raw values.
#[derive(Debug, Clone)]
pub enum RawColumn {
    /// Numbers; NaN where missing.
    Num(Numbers),
    /// Categories as written, missing where the export has none.
    Text(Categories),
}

/// A numeric column, held as compactly as its values allow without changing any of them: most
/// features are counts (clicks, days, assessments), whole numbers in a narrow range, held as
/// one or two bytes from the column's least value; other numbers as `f32` where every value is
/// exactly an `f32`, else as `f64`. [`Numbers::get`] gives back each value bit for bit as it
/// was read (a missing value as `f64::NAN`), so what is computed from a snapshot does not depend
/// on how its columns are held.
#[derive(Debug, Clone, PartialEq)]
pub struct Numbers(Held);

/// How a [`Numbers`] holds its values.
#[derive(Debug, Clone, PartialEq)]
enum Held {
    /// Whole numbers `base + code`; `u8::MAX` is missing.
    Small { base: f64, codes: Vec<u8> },
    /// Whole numbers `base + code`; `u16::MAX` is missing.
    Whole { base: f64, codes: Vec<u16> },
    /// Numbers that are all exactly `f32`s (NaN missing).
    Single(Vec<f32>),
    /// Any numbers (NaN missing).
    Double(Vec<f64>),
}

/// Whole numbers up to this magnitude are held as offsets (every such number and every sum of
/// two of them is exact in `f64`).
const WHOLE_LIMIT: f64 = 4_503_599_627_370_496.0; // 2^52

impl Numbers {
    /// Holds `values` (NaN where missing).
    pub fn new(values: Vec<f64>) -> Numbers {
        // Whole numbers (not -0, which an offset would give back as 0) and NaNs as `f64::NAN`
        // writes them: the range decides the width of the codes.
        let whole = |v: f64| {
            v.fract() == 0.0 && v.abs() < WHOLE_LIMIT && (v != 0.0 || v.is_sign_positive())
        };
        let mut range: Option<(f64, f64)> = None;
        let mut all_whole = true;
        for v in &values {
            if v.is_nan() {
                all_whole &= v.to_bits() == f64::NAN.to_bits();
            } else if whole(*v) {
                range = Some(range.map_or((*v, *v), |(lo, hi)| (lo.min(*v), hi.max(*v))));
            } else {
                all_whole = false;
                break;
            }
        }
        if all_whole {
            let (base, top) = range.unwrap_or((0.0, 0.0));
            let span = top - base;
            if span < f64::from(u8::MAX) {
                return Numbers(Held::Small {
                    base,
                    codes: codes(&values, base, u8::MAX, |d| d as u8),
                });
            }
            if span < f64::from(u16::MAX) {
                return Numbers(Held::Whole {
                    base,
                    codes: codes(&values, base, u16::MAX, |d| d as u16),
                });
            }
        }
        if values
            .iter()
            .all(|v| f64::from(*v as f32).to_bits() == v.to_bits())
        {
            return Numbers(Held::Single(values.iter().map(|v| *v as f32).collect()));
        }
        Numbers(Held::Double(values))
    }

    /// Rows.
    pub fn len(&self) -> usize {
        match &self.0 {
            Held::Small { codes, .. } => codes.len(),
            Held::Whole { codes, .. } => codes.len(),
            Held::Single(v) => v.len(),
            Held::Double(v) => v.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `row` (NaN where missing), exactly as it was given.
    #[inline]
    pub fn get(&self, row: usize) -> f64 {
        match &self.0 {
            Held::Small { base, codes } => match codes[row] {
                u8::MAX => f64::NAN,
                c => base + f64::from(c),
            },
            Held::Whole { base, codes } => match codes[row] {
                u16::MAX => f64::NAN,
                c => base + f64::from(c),
            },
            Held::Single(v) => f64::from(v[row]),
            Held::Double(v) => v[row],
        }
    }

    /// Every value, in row order.
    pub fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        (0..self.len()).map(|r| self.get(r))
    }

    /// Bytes the values take.
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Held::Small { codes, .. } => codes.len(),
            Held::Whole { codes, .. } => 2 * codes.len(),
            Held::Single(v) => 4 * v.len(),
            Held::Double(v) => 8 * v.len(),
        }
    }
}

impl From<Vec<f64>> for Numbers {
    fn from(values: Vec<f64>) -> Numbers {
        Numbers::new(values)
    }
}

/// Each value's offset from `base` as a code (`missing` where NaN), for whole numbers whose
/// offsets are below `missing`.
fn codes<T: Copy>(values: &[f64], base: f64, missing: T, code: impl Fn(f64) -> T) -> Vec<T> {
    values
        .iter()
        .map(|v| if v.is_nan() { missing } else { code(v - base) })
        .collect()
}

/// A text column with each distinct value stored once: the values in sorted order and, per row,
/// the index of its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Categories {
    /// The distinct values, sorted (so codes compare as their values do).
    pub values: Vec<String>,
    /// Each row's index into `values`; [`Categories::MISSING`] where the row has no value.
    pub codes: Vec<u32>,
}

impl Categories {
    /// The code of a missing value.
    pub const MISSING: u32 = u32::MAX;

    /// From each row's value (`None` where missing).
    pub fn new<'a>(rows: impl IntoIterator<Item = Option<&'a str>>) -> Categories {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut codes: Vec<u32> = rows
            .into_iter()
            .map(|v| match v {
                None => Self::MISSING,
                Some(t) => *index.entry(t).or_insert_with(|| {
                    seen.push(t);
                    (seen.len() - 1) as u32
                }),
            })
            .collect();
        // Renumber in value order.
        let mut order: Vec<usize> = (0..seen.len()).collect();
        order.sort_unstable_by_key(|i| seen[*i]);
        let mut rank = vec![0u32; seen.len()];
        for (new, old) in order.iter().enumerate() {
            rank[*old] = new as u32;
        }
        for c in codes.iter_mut().filter(|c| **c != Self::MISSING) {
            *c = rank[*c as usize];
        }
        Categories {
            values: order.iter().map(|i| seen[*i].to_owned()).collect(),
            codes,
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The value of `row`, None where missing.
    pub fn get(&self, row: usize) -> Option<&str> {
        self.values
            .get(self.codes[row] as usize)
            .map(String::as_str)
    }
}

/// A feature snapshot loaded for training and evaluation.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Snapshot id (content hash).
    pub id: String,
    /// Where it was read from.
    pub dir: PathBuf,
    /// The full feature schema, in snapshot order.
    pub schema: FeatureSchema,
    /// Values per feature, in schema order.
    pub columns: Vec<RawColumn>,
    /// Presentation of each row, as an index into `presentations`.
    pub presentation: Vec<u32>,
    /// Presentations, `MODULE-PRESENTATION`.
    pub presentations: Vec<String>,
    /// Student id of each row.
    pub student: Vec<i64>,
    /// As-of week of each row.
    pub week: Vec<u16>,
    /// Still registered at the end of the row's week.
    pub active: Vec<bool>,
    /// At-risk label (None when the outcome is unknown).
    pub label: Vec<Option<bool>>,
    /// Protected groups per row, by attribute, as readable labels (never missing: a row without
    /// the attribute is in the group `unknown`).
    pub groups: Vec<(ProtectedAttribute, Categories)>,
    /// Each presentation's term as the manifest records it (running or finished, as of which
    /// day); empty for a frame read without its manifest.
    pub terms: Vec<PresentationTerm>,
}

impl Snapshot {
    /// Rows.
    pub fn len(&self) -> usize {
        self.week.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.week.is_empty()
    }

    /// Reads `dir/features.parquet` and its manifest.
    pub fn read(dir: &Path) -> Result<Snapshot, TrainError> {
        let manifest = read_manifest(dir).map_err(|e| TrainError::Snapshot(e.to_string()))?;
        let path = dir.join(FEATURES_FILE);
        let file = File::open(&path).map_err(|source| TrainError::Io {
            path: path.clone(),
            source,
        })?;
        let bad = |e: PolarsError| TrainError::Snapshot(format!("{}: {e}", path.display()));
        let mut reader = ParquetReader::new(file);
        let names: Vec<String> = (reader.schema().map_err(bad)?.iter_names())
            .map(|n| n.to_string())
            .collect();
        let metadata = reader.get_metadata().map_err(bad)?.clone();
        // A column at a time: all of them at once, as Parquet decodes them, would take more
        // memory than the snapshot itself.
        let column = |name: &str| {
            let mut reader =
                ParquetReader::new(File::open(&path)?).with_columns(Some(vec![name.to_owned()]));
            reader.set_metadata(metadata.clone());
            reader.finish()?.drop_in_place(name)
        };
        let mut s = Self::build(&names, &column, manifest.snapshot_id, dir.to_path_buf())?;
        s.terms = manifest.terms;
        Ok(s)
    }

    /// The term of presentation index `p`, when the manifest records it.
    pub fn term(&self, p: u32) -> Option<&PresentationTerm> {
        let name = self.presentations.get(p as usize)?;
        self.terms.iter().find(|t| t.presentation == *name)
    }

    /// Whether presentation index `p` is running (some student has no outcome yet): never
    /// trained or evaluated on, scored at its current week.
    pub fn is_running(&self, p: u32) -> bool {
        self.term(p).is_some_and(PresentationTerm::is_running)
    }

    /// Indexes of the running presentations, in name order (presentations with no feature row
    /// yet, before their first complete week, are not among them).
    pub fn running_presentations(&self) -> Vec<u32> {
        let mut running: Vec<u32> = (0..self.presentations.len() as u32)
            .filter(|p| self.is_running(*p))
            .collect();
        running
            .sort_by(|a, b| self.presentations[*a as usize].cmp(&self.presentations[*b as usize]));
        running
    }

    /// Builds from a feature frame as ingest writes it.
    pub fn from_frame(df: &DataFrame, id: String, dir: PathBuf) -> Result<Snapshot, TrainError> {
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        Self::build(&names, &|name| df.column(name).cloned(), id, dir)
    }

    /// Builds from the columns `present`, each fetched by `column` when it is converted (and
    /// dropped once it is).
    fn build(
        present: &[String],
        column: &dyn Fn(&str) -> PolarsResult<Column>,
        id: String,
        dir: PathBuf,
    ) -> Result<Snapshot, TrainError> {
        let bad = |what: &str, e: PolarsError| TrainError::Snapshot(format!("column {what}: {e}"));
        let column = |name: &str, to: &DataType| {
            column(name)
                .and_then(|c| c.cast(to))
                .map_err(|e| bad(name, e))
        };
        let number = |name: &str| -> Result<Vec<f64>, TrainError> {
            let c = column(name, &DataType::Float64)?;
            let c = c.f64().map_err(|e| bad(name, e))?;
            Ok(c.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        };
        // Who and when each row is.
        let student = number("id_student")?.iter().map(|v| *v as i64).collect();
        let week = number("as_of_week")?.iter().map(|v| *v as u16).collect();
        let active = number(ACTIVE_COLUMN)?.iter().map(|v| *v == 1.0).collect();
        let label = number(LABEL_COLUMN)?
            .iter()
            .map(|v| (!v.is_nan()).then_some(*v == 1.0))
            .collect();
        let (presentation, presentations) = {
            let modules = column("code_module", &DataType::String)?;
            let codes = column("code_presentation", &DataType::String)?;
            presentations(
                modules.str().map_err(|e| bad("code_module", e))?,
                codes.str().map_err(|e| bad("code_presentation", e))?,
            )
        };
        // The standard features this snapshot has: a source without student attributes (Moodle,
        // xAPI) leaves theirs out.
        let standard = FeatureSchema::standard();
        let absent: Vec<String> = standard
            .names()
            .filter(|n| !present.iter().any(|p| p == n))
            .map(str::to_owned)
            .collect();
        let schema = standard.without(&absent);
        let mut columns = Vec::with_capacity(schema.features.len());
        for f in &schema.features {
            columns.push(if f.kind == FeatureKind::Categorical {
                let c = column(&f.name, &DataType::String)?;
                RawColumn::Text(Categories::new(
                    c.str().map_err(|e| bad(&f.name, e))?.iter(),
                ))
            } else {
                RawColumn::Num(Numbers::new(number(&f.name)?))
            });
        }
        let groups = protected_groups(&schema, &columns);
        Ok(Snapshot {
            id,
            dir,
            schema,
            columns,
            presentation,
            presentations,
            student,
            week,
            active,
            label,
            groups,
            terms: Vec::new(),
        })
    }

    /// Indexes of the presentations that `selectors` name: each selector is a full
    /// `MODULE-PRESENTATION` or a presentation code such as `2013B` (every module).
    pub fn select_presentations(&self, selectors: &[String]) -> Result<Vec<u32>, TrainError> {
        let mut chosen = Vec::new();
        for s in selectors {
            let before = chosen.len();
            for (i, p) in self.presentations.iter().enumerate() {
                let code = p.split_once('-').map_or(p.as_str(), |(_, c)| c);
                if (p == s || code == s) && !chosen.contains(&(i as u32)) {
                    chosen.push(i as u32);
                }
            }
            if chosen.len() == before {
                return Err(TrainError::Config(format!(
                    "no presentation {s:?} in snapshot {}; it has {}",
                    self.id,
                    self.presentations.join(", ")
                )));
            }
        }
        chosen
            .sort_by(|a, b| self.presentations[*a as usize].cmp(&self.presentations[*b as usize]));
        Ok(chosen)
    }

    /// Names of presentation indexes.
    pub fn names(&self, indexes: &[u32]) -> Vec<String> {
        indexes
            .iter()
            .map(|i| self.presentations[*i as usize].clone())
            .collect()
    }

    /// The raw cell of `row` in feature `column`, with categorical values looked up in
    /// `categories`.
    pub fn cell(&self, column: usize, row: usize, categories: &[String]) -> Cell {
        match &self.columns[column] {
            RawColumn::Num(v) => Cell::Num(v.get(row)),
            RawColumn::Text(v) => Cell::Cat(
                v.get(row)
                    .and_then(|t| categories.iter().position(|c| c == t)),
            ),
        }
    }
}

/// Each row's presentation, `MODULE-PRESENTATION`, as an index into the presentations in order
/// of first appearance.
fn presentations(modules: &StringChunked, codes: &StringChunked) -> (Vec<u32>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut index = Vec::with_capacity(modules.len());
    // Rows come grouped by presentation: most rows are the previous row's.
    let (mut last, mut at) = (None, 0u32);
    for key in modules.iter().zip(codes.iter()) {
        if last != Some(key) {
            let name = format!("{}-{}", key.0.unwrap_or("?"), key.1.unwrap_or("?"));
            at = match names.iter().position(|p| *p == name) {
                Some(i) => i,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            } as u32;
            last = Some(key);
        }
        index.push(at);
    }
    (index, names)
}

const AGE_BANDS: [&str; 3] = ["0-35", "35-55", "55<="];

/// The readable group of a protected attribute's number.
fn group_label(attribute: ProtectedAttribute, x: f64) -> String {
    if x.is_nan() {
        return "unknown".to_owned();
    }
    match attribute {
        ProtectedAttribute::Disability => if x == 1.0 { "Y" } else { "N" }.to_owned(),
        ProtectedAttribute::AgeBand => AGE_BANDS
            .get(x as usize)
            .map_or_else(|| format!("{x}"), |s| (*s).to_owned()),
        ProtectedAttribute::ImdBand => {
            let d = x as i64;
            format!("{}-{}%", d * 10, d * 10 + 10)
        }
        _ => format!("{x}"),
    }
}

/// Readable group labels per protected attribute.
fn protected_groups(
    schema: &FeatureSchema,
    columns: &[RawColumn],
) -> Vec<(ProtectedAttribute, Categories)> {
    let mut out = Vec::new();
    for (f, c) in schema.features.iter().zip(columns) {
        let Some(attribute) = f.protected else {
            continue;
        };
        let labels = match c {
            RawColumn::Text(v) => {
                Categories::new((0..v.len()).map(|r| Some(v.get(r).unwrap_or("unknown"))))
            }
            RawColumn::Num(v) => {
                // A label per distinct number (a handful), then per row.
                let mut label: HashMap<u64, String> = HashMap::new();
                for x in v.iter() {
                    label
                        .entry(x.to_bits())
                        .or_insert_with(|| group_label(attribute, x));
                }
                Categories::new(v.iter().map(|x| Some(label[&x.to_bits()].as_str())))
            }
        };
        out.push((attribute, labels));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_hold_each_value_once_in_sorted_order() {
        let c = Categories::new([Some("b"), None, Some("a"), Some("b"), Some("c")]);
        assert_eq!(c.values, ["a", "b", "c"]);
        assert_eq!(c.codes, [1, Categories::MISSING, 0, 1, 2]);
        let rows: Vec<Option<&str>> = (0..c.len()).map(|r| c.get(r)).collect();
        assert_eq!(rows, [Some("b"), None, Some("a"), Some("b"), Some("c")]);
        assert!(Categories::new([]).is_empty());
    }

    #[test]
    fn numbers_give_back_every_value_bit_for_bit_however_they_are_held() {
        let odd_nan = f64::from_bits(f64::NAN.to_bits() | 1);
        let columns: [(Vec<f64>, usize); 7] = [
            // Counts in a narrow range: a byte each, from the least value.
            (vec![3.0, f64::NAN, 250.0, 3.0, 0.0], 1),
            (vec![-7.0, 0.0, 240.0, f64::NAN], 1),
            // A wider range: two bytes.
            (vec![0.0, 65_534.0, f64::NAN, 12.0], 2),
            // Too wide, or -0 (an offset would give +0), or fractions exact in f32: four.
            (vec![0.0, 65_535.0, f64::NAN], 4),
            (vec![1.0, -0.0, 2.0], 4),
            (vec![0.5, 0.25, f64::NAN, 1e30f32 as f64], 4),
            // Fractions that are not f32s, and a NaN written otherwise: eight.
            (vec![0.1, 2.0, odd_nan, f64::INFINITY], 8),
        ];
        for (values, width) in columns {
            let n = Numbers::new(values.clone());
            assert_eq!(n.len(), values.len());
            assert_eq!(n.bytes(), width * values.len(), "{values:?}");
            for (r, v) in values.iter().enumerate() {
                assert_eq!(n.get(r).to_bits(), v.to_bits(), "{values:?} row {r}");
            }
            let back: Vec<u64> = n.iter().map(f64::to_bits).collect();
            let given: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
            assert_eq!(back, given);
        }
        let odd_nan_alone = Numbers::new(vec![1.0, odd_nan]);
        assert_eq!(odd_nan_alone.get(1).to_bits(), odd_nan.to_bits());
        assert!(Numbers::new(vec![]).is_empty());
        assert_eq!(Numbers::new(vec![f64::NAN; 3]).bytes(), 3);
    }

    #[test]
    fn protected_numbers_become_readable_groups() {
        let schema = FeatureSchema::standard();
        let columns: Vec<RawColumn> = schema
            .features
            .iter()
            .map(|f| match (f.kind, f.protected) {
                (FeatureKind::Categorical, _) => {
                    RawColumn::Text(Categories::new([Some("M"), None, Some("F")]))
                }
                (_, Some(ProtectedAttribute::ImdBand)) => {
                    RawColumn::Num(vec![2.0, f64::NAN, 0.0].into())
                }
                _ => RawColumn::Num(vec![1.0, 0.0, f64::NAN].into()),
            })
            .collect();
        let groups = protected_groups(&schema, &columns);
        let labels = |a: ProtectedAttribute| -> Vec<&str> {
            let (_, c) = groups.iter().find(|(b, _)| *b == a).unwrap();
            (0..c.len()).map(|r| c.get(r).unwrap()).collect()
        };
        assert_eq!(labels(ProtectedAttribute::Gender), ["M", "unknown", "F"]);
        assert_eq!(
            labels(ProtectedAttribute::Disability),
            ["Y", "N", "unknown"]
        );
        assert_eq!(
            labels(ProtectedAttribute::AgeBand),
            ["35-55", "0-35", "unknown"]
        );
        assert_eq!(
            labels(ProtectedAttribute::ImdBand),
            ["20-30%", "unknown", "0-10%"]
        );
    }
}
