//! A feature snapshot in memory, column by column: the raw feature values, who and when each row
//! is, whether the student is still registered, the label, and the protected groups used by
//! fairness reports (as readable labels).

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
    Num(Vec<f64>),
    /// Categories as written, `None` where missing.
    Text(Vec<Option<String>>),
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
    /// Protected groups per row, by attribute, as readable labels.
    pub groups: Vec<(ProtectedAttribute, Vec<String>)>,
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
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| TrainError::Snapshot(format!("{}: {e}", path.display())))?;
        let mut s = Self::from_frame(&df, manifest.snapshot_id, dir.to_path_buf())?;
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
        let bad = |what: &str, e: PolarsError| TrainError::Snapshot(format!("column {what}: {e}"));
        let numbers = |name: &str| -> Result<Vec<f64>, TrainError> {
            let c = df
                .column(name)
                .and_then(|c| c.cast(&DataType::Float64))
                .map_err(|e| bad(name, e))?;
            let c = c.f64().map_err(|e| bad(name, e))?;
            Ok(c.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        };
        let texts = |name: &str| -> Result<Vec<Option<String>>, TrainError> {
            let c = df
                .column(name)
                .and_then(|c| c.cast(&DataType::String))
                .map_err(|e| bad(name, e))?;
            let c = c.str().map_err(|e| bad(name, e))?;
            Ok(c.iter().map(|v| v.map(str::to_owned)).collect())
        };
        // The standard features this snapshot has: a source without student attributes (Moodle,
        // xAPI) leaves theirs out.
        let present: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
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
                RawColumn::Text(texts(&f.name)?)
            } else {
                RawColumn::Num(numbers(&f.name)?)
            });
        }
        let modules = texts("code_module")?;
        let codes = texts("code_presentation")?;
        let mut presentations: Vec<String> = Vec::new();
        let mut presentation = Vec::with_capacity(df.height());
        for (m, c) in modules.iter().zip(&codes) {
            let name = format!(
                "{}-{}",
                m.as_deref().unwrap_or("?"),
                c.as_deref().unwrap_or("?")
            );
            let i = match presentations.iter().position(|p| *p == name) {
                Some(i) => i,
                None => {
                    presentations.push(name);
                    presentations.len() - 1
                }
            };
            presentation.push(i as u32);
        }
        let student = numbers("id_student")?.iter().map(|v| *v as i64).collect();
        let week = numbers("as_of_week")?.iter().map(|v| *v as u16).collect();
        let active = numbers(ACTIVE_COLUMN)?.iter().map(|v| *v == 1.0).collect();
        let label = numbers(LABEL_COLUMN)?
            .iter()
            .map(|v| (!v.is_nan()).then_some(*v == 1.0))
            .collect();
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
            RawColumn::Num(v) => Cell::Num(v[row]),
            RawColumn::Text(v) => Cell::Cat(
                v[row]
                    .as_ref()
                    .and_then(|t| categories.iter().position(|c| c == t)),
            ),
        }
    }
}

const AGE_BANDS: [&str; 3] = ["0-35", "35-55", "55<="];

/// Readable group labels per protected attribute.
fn protected_groups(
    schema: &FeatureSchema,
    columns: &[RawColumn],
) -> Vec<(ProtectedAttribute, Vec<String>)> {
    let mut out = Vec::new();
    for (f, c) in schema.features.iter().zip(columns) {
        let Some(attribute) = f.protected else {
            continue;
        };
        let labels = match c {
            RawColumn::Text(v) => v
                .iter()
                .map(|t| t.clone().unwrap_or_else(|| "unknown".into()))
                .collect(),
            RawColumn::Num(v) => v
                .iter()
                .map(|x| {
                    if x.is_nan() {
                        return "unknown".to_owned();
                    }
                    match attribute {
                        ProtectedAttribute::Disability => {
                            if *x == 1.0 { "Y" } else { "N" }.to_owned()
                        }
                        ProtectedAttribute::AgeBand => AGE_BANDS
                            .get(*x as usize)
                            .map_or_else(|| format!("{x}"), |s| (*s).to_owned()),
                        ProtectedAttribute::ImdBand => {
                            let d = *x as i64;
                            format!("{}-{}%", d * 10, d * 10 + 10)
                        }
                        _ => format!("{x}"),
                    }
                })
                .collect(),
        };
        out.push((attribute, labels));
    }
    out
}
