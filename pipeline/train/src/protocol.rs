//! Which rows train, calibrate and test under a protocol.
//!
//! Temporal by default: fit on earlier presentations, calibrate on training presentations held
//! out of the fit, test on later presentations. At as-of week k the evaluated population is the
//! students still registered at the end of week k. A random split of students exists for
//! comparison only, and its report says so.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::Snapshot;
use crate::options::TrainOptions;

/// How rows are split into training and test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// Train on `train`, test on `test` (presentations or codes such as `2013B`).
    Temporal {
        /// Training presentations.
        train: Vec<String>,
        /// Test presentations.
        test: Vec<String>,
    },
    /// Students of `presentations` split at random, `test_fraction` of them tested. Students of
    /// the same course term share teachers, materials and deadlines, so this flatters every
    /// model: for comparison only.
    Random {
        /// Presentations pooled.
        presentations: Vec<String>,
        /// Fraction of students tested.
        test_fraction: f64,
    },
}

/// Training rows and the folds of the cross-fitted calibration.
#[derive(Debug, Clone)]
pub struct TrainingRows {
    /// Every training row, ascending.
    pub rows: Vec<usize>,
    /// Per fold, the positions (in `rows`) it holds out.
    pub folds: Vec<Vec<usize>>,
    /// Training presentations.
    pub presentations: Vec<String>,
    /// What each fold holds out, in words.
    pub fold_names: Vec<String>,
}

/// Most calibration folds.
const MAX_FOLDS: usize = 4;

fn usable(s: &Snapshot, row: usize, max_week: Option<u16>) -> bool {
    s.active[row] && s.label[row].is_some() && max_week.is_none_or(|w| s.week[row] <= w)
}

/// The training rows of `presentations`, with calibration folds: each fold holds out whole
/// presentations (up to four folds, presentations dealt to them in a seeded order); with a
/// single presentation, a quarter of its students per fold.
pub fn split_training(
    s: &Snapshot,
    presentations: &[u32],
    seed: u64,
    max_week: Option<u16>,
) -> Result<TrainingRows, TrainError> {
    let rows: Vec<usize> = (0..s.len())
        .filter(|r| presentations.contains(&s.presentation[*r]) && usable(s, *r, max_week))
        .collect();
    if rows.is_empty() {
        return Err(TrainError::Data(format!(
            "no training rows: {} has no registered student with a known outcome",
            s.names(presentations).join(", ")
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let names = s.names(presentations);
    let (fold_of_row, fold_names): (Vec<usize>, Vec<String>) = if presentations.len() >= 2 {
        let mut order = presentations.to_vec();
        order.shuffle(&mut rng);
        let k = order.len().min(MAX_FOLDS);
        let fold_of = |p: u32| order.iter().position(|q| *q == p).unwrap_or(0) % k;
        let mut fold_names = vec![Vec::new(); k];
        for p in presentations {
            fold_names[fold_of(*p)].push(s.presentations[*p as usize].clone());
        }
        (
            rows.iter().map(|r| fold_of(s.presentation[*r])).collect(),
            fold_names.into_iter().map(|v| v.join(" + ")).collect(),
        )
    } else {
        let fold_of_row = student_folds(s, &rows, &mut rng);
        let k = fold_of_row.iter().max().map_or(1, |m| m + 1);
        (
            fold_of_row,
            (1..=k)
                .map(|i| format!("part {i} of {k} of {}'s students", names.join(", ")))
                .collect(),
        )
    };
    let mut folds = vec![Vec::new(); fold_names.len()];
    for (pos, f) in fold_of_row.iter().enumerate() {
        folds[*f].push(pos);
    }
    if folds.len() < 2 {
        return Err(TrainError::Data(
            "calibration needs at least two training students".into(),
        ));
    }
    Ok(TrainingRows {
        rows,
        folds,
        presentations: names,
        fold_names,
    })
}

/// The calibration fold of each row when folds are cut by student: the distinct students
/// (presentation, id) of `rows` in a seeded order, dealt to up to [`MAX_FOLDS`] folds.
fn student_folds(s: &Snapshot, rows: &[usize], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let key = |r: usize| (s.presentation[r], s.student[r]);
    let mut students: Vec<(u32, i64)> = rows
        .iter()
        .map(|r| key(*r))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    students.shuffle(rng);
    let k = MAX_FOLDS.min(students.len()).max(1);
    let fold: std::collections::HashMap<(u32, i64), usize> = students
        .into_iter()
        .enumerate()
        .map(|(i, st)| (st, i % k))
        .collect();
    rows.iter().map(|r| fold[&key(*r)]).collect()
}

/// A seeded `fraction` of the distinct students among `rows`.
fn held_out_students(
    s: &Snapshot,
    rows: &[usize],
    fraction: f64,
    rng: &mut ChaCha8Rng,
) -> BTreeSet<(u32, i64)> {
    let students: BTreeSet<(u32, i64)> = rows
        .iter()
        .map(|r| (s.presentation[*r], s.student[*r]))
        .collect();
    let mut students: Vec<_> = students.into_iter().collect();
    students.shuffle(rng);
    let k = ((students.len() as f64 * fraction).round() as usize).clamp(1, students.len());
    students.truncate(k);
    students.into_iter().collect()
}

/// Training and test rows of a protocol.
pub(crate) struct Split {
    pub(crate) rows: TrainingRows,
    pub(crate) test_rows: Vec<usize>,
    pub(crate) description: String,
    pub(crate) train_names: Vec<String>,
    pub(crate) test_names: Vec<String>,
    pub(crate) random: bool,
}

pub(crate) fn split(
    s: &Snapshot,
    protocol: &Protocol,
    o: &TrainOptions,
) -> Result<Split, TrainError> {
    let (rows, test_rows, description, train_names, test_names, random) = match protocol {
        Protocol::Temporal { train, test } => {
            // Running presentations have no outcomes yet: never trained or tested on.
            let mut tr = s.select_presentations(train)?;
            tr.retain(|p| !s.is_running(*p));
            let mut te = s.select_presentations(test)?;
            te.retain(|p| !s.is_running(*p));
            if let Some(p) = tr.iter().find(|p| te.contains(p)) {
                return Err(TrainError::Config(format!(
                    "{} is both a training and a test presentation",
                    s.presentations[*p as usize]
                )));
            }
            let rows = split_training(s, &tr, o.seed, o.max_week)?;
            let test_rows: Vec<usize> = (0..s.len())
                .filter(|r| te.contains(&s.presentation[*r]) && usable(s, *r, None))
                .collect();
            let (trn, ten) = (s.names(&tr), s.names(&te));
            let d = if ten.is_empty() {
                format!(
                    "temporal: trained on {}; not tested (no finished presentation is later than the training ones)",
                    trn.join(", ")
                )
            } else {
                format!(
                    "temporal: trained on {}, tested on {}",
                    trn.join(", "),
                    ten.join(", ")
                )
            };
            (rows, test_rows, d, trn, ten, false)
        }
        Protocol::Random {
            presentations,
            test_fraction,
        } => {
            if !(*test_fraction > 0.0 && *test_fraction < 1.0) {
                return Err(TrainError::Config(
                    "the test fraction must be in (0, 1)".into(),
                ));
            }
            let ps = s.select_presentations(presentations)?;
            let all: Vec<usize> = (0..s.len())
                .filter(|r| ps.contains(&s.presentation[*r]) && usable(s, *r, None))
                .collect();
            let mut rng = ChaCha8Rng::seed_from_u64(o.seed ^ 0x5eed);
            let test = held_out_students(s, &all, *test_fraction, &mut rng);
            let (test_rows, train): (Vec<usize>, Vec<usize>) = all
                .into_iter()
                .partition(|r| test.contains(&(s.presentation[*r], s.student[*r])));
            let train: Vec<usize> = train
                .into_iter()
                .filter(|r| usable(s, *r, o.max_week))
                .collect();
            let names = s.names(&ps);
            let fold_of_row = student_folds(s, &train, &mut rng);
            let mut folds = vec![Vec::new(); MAX_FOLDS];
            for (pos, f) in fold_of_row.iter().enumerate() {
                folds[*f].push(pos);
            }
            folds.retain(|f| !f.is_empty());
            let rows = TrainingRows {
                fold_names: (1..=folds.len())
                    .map(|i| format!("training students, part {i} of {}", folds.len()))
                    .collect(),
                rows: train,
                folds,
                presentations: names.clone(),
            };
            let d = format!(
                "random split of students ({:.0}% tested) within {}: FOR COMPARISON ONLY; students of one course term share teachers, materials and deadlines, so this overstates how the model does on next term's students",
                test_fraction * 100.0,
                names.join(", ")
            );
            (rows, test_rows, d, names.clone(), names, true)
        }
    };
    Ok(Split {
        rows,
        test_rows,
        description,
        train_names,
        test_names,
        random,
    })
}

impl Protocol {
    /// A temporal protocol over the snapshot's presentation codes (e.g. `2013B`): `test` by
    /// default the latest code, `train` by default every code before the latest tested one.
    pub fn temporal(
        s: &Snapshot,
        train: &[String],
        test: &[String],
    ) -> Result<Protocol, TrainError> {
        // Only finished presentations train and test: a running one has no outcomes yet.
        let mut codes: Vec<&str> = s
            .presentations
            .iter()
            .enumerate()
            .filter(|(i, _)| !s.is_running(*i as u32))
            .map(|(_, p)| p.split_once('-').map_or(p.as_str(), |(_, c)| c))
            .collect();
        codes.sort_unstable();
        codes.dedup();
        if codes.is_empty() {
            return Err(TrainError::Config(format!(
                "no finished presentation to train on: every presentation of snapshot {} is running ({})",
                s.id,
                s.presentations.join(", ")
            )));
        }
        let test: Vec<String> = if test.is_empty() {
            match codes.last() {
                Some(c) if codes.len() >= 2 => vec![(*c).to_owned()],
                // One finished presentation code: train on it; the report says it is untested.
                _ if train.is_empty() => {
                    return Ok(Protocol::Temporal {
                        train: codes.iter().map(|c| (*c).to_owned()).collect(),
                        test: Vec::new(),
                    });
                }
                _ => Vec::new(),
            }
        } else {
            test.to_vec()
        };
        let train: Vec<String> = if train.is_empty() {
            let latest = test.iter().max().cloned().unwrap_or_default();
            codes
                .iter()
                .filter(|c| **c < latest.as_str() && !test.iter().any(|t| t == *c))
                .map(|c| (*c).to_owned())
                .collect()
        } else {
            train.to_vec()
        };
        if train.is_empty() {
            return Err(TrainError::Config(
                "no presentation precedes the test presentations: name the training ones".into(),
            ));
        }
        Ok(Protocol::Temporal { train, test })
    }
}
