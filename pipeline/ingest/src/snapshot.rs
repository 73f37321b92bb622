//! Snapshots: the feature table as Parquet with a JSON manifest and the quarantine, in a folder
//! named by a content hash of the export's files, the options and the feature code's version.
//! Written in a staging folder and renamed into place, so a crash leaves the previous snapshot
//! intact and no partial one; an unchanged export gives the same hash and is not recomputed.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lodestar_domain::{FeatureSchema, LabelRule, PresentationTerm, Table};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{IngestError, PolarsContext};
use crate::features::{
    ACTIVE_COLUMN, KEY_COLUMNS, LABEL_COLUMN, RESULT_COLUMN, build_features,
    build_features_by_presentation,
};
use crate::load::{Quarantine, TableCount, load_export};
use crate::read::locate;
use crate::validate::DateWindow;

/// Version of the feature code: bump whenever a feature is computed differently, so snapshots
/// made by older code are not reused.
pub const FEATURE_CODE_VERSION: u32 = 2;

/// File names inside a snapshot folder.
pub const FEATURES_FILE: &str = "features.parquet";
/// The manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The quarantined rows.
pub const QUARANTINE_FILE: &str = "quarantine.csv";
/// In the snapshot root: the id of the newest snapshot.
pub const LATEST_FILE: &str = "LATEST";

/// What an ingest may vary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestOptions {
    /// Dates allowed around each presentation.
    pub window: DateWindow,
    /// Which final results are "at risk".
    pub label: LabelRule,
    /// The as-of day of every running presentation (`--as-of-day`, OULAD-schema day numbers):
    /// records dated after it are refused. None: a converted source's configured as-of, else
    /// each running presentation's latest recorded day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of_day: Option<i32>,
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// The table it holds.
    pub table: Table,
    /// File name.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// xxh3-128 of its bytes, hex.
    pub xxh3: String,
}

/// Descriptions of the snapshot's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotColumns {
    /// Identify the row's student and presentation.
    pub keys: Vec<String>,
    /// The row's week is `as_of_week`, itself a feature.
    pub active: String,
    /// Outcome columns, beside the features and never among them.
    pub labels: Vec<String>,
    /// The features, with their meaning and protected characteristics marked.
    pub features: FeatureSchema,
}

/// Everything known about a snapshot, written as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Content hash naming the snapshot folder.
    pub snapshot_id: String,
    /// Seconds since the Unix epoch when it was made.
    pub created_unix: u64,
    /// Lodestar's version.
    pub lodestar_version: String,
    /// [`FEATURE_CODE_VERSION`].
    pub feature_code_version: u32,
    /// The export folder read.
    pub export_dir: PathBuf,
    /// Options used.
    pub options: IngestOptions,
    /// The input files.
    pub inputs: Vec<InputFile>,
    /// Per table: read = accepted + quarantined.
    pub tables: Vec<TableCount>,
    /// Rows in the quarantine file.
    pub quarantined_rows: u64,
    /// Features the source could not supply (a Moodle or xAPI export has no student
    /// attributes): absent from the feature table and its schema.
    #[serde(default)]
    pub absent_features: Vec<String>,
    /// Rows in the feature table.
    pub feature_rows: u64,
    /// Distinct students (per presentation) in the feature table.
    pub student_presentations: u64,
    /// Presentations, as `MODULE-PRESENTATION`.
    pub presentations: Vec<String>,
    /// Each presentation running or finished, as of which day and where that day came from,
    /// and its current week.
    #[serde(default)]
    pub terms: Vec<PresentationTerm>,
    /// Column descriptions.
    pub columns: SnapshotColumns,
    /// Seconds per step.
    pub timings: Vec<(String, f64)>,
}

/// The result of [`ingest`].
#[derive(Debug, Clone)]
pub struct IngestOutcome {
    /// The snapshot folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// True when an identical snapshot existed and was reused.
    pub reused: bool,
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> IngestError + '_ {
    move |source| IngestError::Write {
        path: path.to_owned(),
        source,
    }
}

fn hash_file(path: &Path) -> Result<(u64, String), IngestError> {
    let read_err = |source| IngestError::Read {
        file: path.to_owned(),
        line: 0,
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, format!("{:032x}", hasher.digest128())))
}

/// The inputs of an export and the snapshot id they give with `options`.
pub fn snapshot_id(
    export_dir: &Path,
    options: &IngestOptions,
) -> Result<(String, Vec<InputFile>), IngestError> {
    let mut inputs = Vec::new();
    let mut hasher = Xxh3::new();
    hasher.update(
        format!(
            "lodestar-features-v{FEATURE_CODE_VERSION}/schema-v{}",
            FeatureSchema::STANDARD_VERSION
        )
        .as_bytes(),
    );
    hasher.update(
        serde_json::to_string(options)
            .unwrap_or_default()
            .as_bytes(),
    );
    for table in Table::ALL {
        let path = locate(export_dir, table)?;
        let (bytes, xxh3) = hash_file(&path)?;
        hasher.update(table.file_stem().as_bytes());
        hasher.update(xxh3.as_bytes());
        inputs.push(InputFile {
            table,
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes,
            xxh3,
        });
    }
    Ok((format!("{:032x}", hasher.digest128()), inputs))
}

/// Reads the manifest of an existing snapshot folder.
pub fn read_manifest(dir: &Path) -> Result<Manifest, IngestError> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).map_err(|source| IngestError::Read {
        file: path.clone(),
        line: 0,
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| IngestError::Read {
        file: path,
        line: e.line() as u64,
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

/// Ingests `export_dir` into a snapshot under `snapshot_root`, or reuses an identical one
/// (unless `force`). `progress` hears the table being read and the rows read so far.
pub fn ingest(
    export_dir: &Path,
    snapshot_root: &Path,
    options: &IngestOptions,
    force: bool,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<IngestOutcome, IngestError> {
    let w = options.window;
    if !(0..=2000).contains(&w.pre_start_days) || !(0..=1000).contains(&w.post_end_days) {
        return Err(IngestError::Unsupported(format!(
            "date window of {} days before the start and {} after the end: supported are 0-2000 and 0-1000",
            w.pre_start_days, w.post_end_days
        )));
    }
    let started = Instant::now();
    let (id, inputs) = snapshot_id(export_dir, options)?;
    let hashed = started.elapsed().as_secs_f64();
    let dir = snapshot_root.join(&id);
    if !force && dir.join(MANIFEST_FILE).is_file() {
        let manifest = read_manifest(&dir)?;
        write_latest(snapshot_root, &id)?;
        return Ok(IngestOutcome {
            dir,
            manifest,
            reused: true,
        });
    }
    fs::create_dir_all(snapshot_root).map_err(write_err(snapshot_root))?;
    let staging = snapshot_root.join(format!(".staging-{id}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(write_err(&staging))?;
    let result = build(export_dir, &staging, &id, inputs, options, progress, hashed);
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if dir.exists() {
        // Forced rebuild, or another process finished the same snapshot first.
        fs::remove_dir_all(&dir).map_err(write_err(&dir))?;
    }
    fs::rename(&staging, &dir).map_err(write_err(&dir))?;
    write_latest(snapshot_root, &id)?;
    Ok(IngestOutcome {
        dir,
        manifest,
        reused: false,
    })
}

/// Writes the feature table part by part as row groups of one Parquet file.
struct FeatureWriter {
    path: PathBuf,
    file: Option<File>,
    writer: Option<polars::io::parquet::write::BatchedWriter<File>>,
    rows: u64,
    students: u64,
}

impl FeatureWriter {
    fn create(path: &Path) -> Result<Self, IngestError> {
        Ok(Self {
            path: path.to_owned(),
            file: Some(File::create(path).map_err(write_err(path))?),
            writer: None,
            rows: 0,
            students: 0,
        })
    }

    fn write(&mut self, mut part: DataFrame) -> Result<(), IngestError> {
        part.align_chunks_par();
        if self.writer.is_none() {
            let file = self.file.take().expect("the file is taken once");
            let writer = ParquetWriter::new(file)
                .with_compression(ParquetCompression::Snappy)
                .batched(part.schema())
                .ctx("starting features.parquet")?;
            self.writer = Some(writer);
        }
        let writer = self.writer.as_mut().expect("set above");
        writer.write_batch(&part).ctx("writing features.parquet")?;
        self.rows += part.height() as u64;
        // Every registered student has exactly one row for week 0.
        self.students += part
            .column("as_of_week")
            .ctx("counting students")?
            .as_materialized_series()
            .equal(0)
            .ctx("counting students")?
            .sum()
            .unwrap_or(0) as u64;
        Ok(())
    }

    /// Finishes and syncs the file; returns (rows, student-presentations).
    fn finish(self) -> Result<(u64, u64), IngestError> {
        if let Some(writer) = &self.writer {
            writer.finish().ctx("finishing features.parquet")?;
        }
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(write_err(&self.path))?;
        Ok((self.rows, self.students))
    }
}

fn write_latest(root: &Path, id: &str) -> Result<(), IngestError> {
    let tmp = root.join(format!(".{LATEST_FILE}.{}", std::process::id()));
    fs::write(&tmp, format!("{id}\n")).map_err(write_err(&tmp))?;
    fs::rename(&tmp, root.join(LATEST_FILE)).map_err(write_err(root))
}

fn build(
    export_dir: &Path,
    staging: &Path,
    id: &str,
    inputs: Vec<InputFile>,
    options: &IngestOptions,
    progress: &mut dyn FnMut(&str, u64),
    hashed: f64,
) -> Result<Manifest, IngestError> {
    let mut timings = vec![("hash inputs".to_owned(), hashed)];
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_owned(), clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };
    let mut quarantine = Quarantine::create(&staging.join(QUARANTINE_FILE))?;
    let export = load_export(
        export_dir,
        options.window,
        options.as_of_day,
        &mut quarantine,
        progress,
    )?;
    quarantine.finish()?;
    lap("read and validate", &mut timings);

    progress("features", 0);
    let path = staging.join(FEATURES_FILE);
    let mut out = FeatureWriter::create(&path)?;
    build_features_by_presentation(&export, &options.label, &mut |part| out.write(part))?;
    if out.writer.is_none() {
        // No rows at all: still a readable file with the columns.
        out.write(build_features(&export, &options.label)?)?;
    }
    let (feature_rows, student_presentations) = out.finish()?;
    lap("features and parquet", &mut timings);

    let presentations: Vec<String> = export
        .courses
        .column("code_module")
        .ctx("presentations")?
        .str()
        .ctx("presentations")?
        .iter()
        .zip(
            export
                .courses
                .column("code_presentation")
                .ctx("presentations")?
                .str()
                .ctx("presentations")?
                .iter(),
        )
        .map(|(m, p)| format!("{}-{}", m.unwrap_or(""), p.unwrap_or("")))
        .collect();
    let manifest = Manifest {
        snapshot_id: id.to_owned(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        lodestar_version: env!("CARGO_PKG_VERSION").to_owned(),
        feature_code_version: FEATURE_CODE_VERSION,
        export_dir: export_dir.to_owned(),
        options: options.clone(),
        inputs,
        quarantined_rows: export.counts.iter().map(|c| c.quarantined).sum(),
        absent_features: export.absent.clone(),
        tables: export.counts,
        feature_rows,
        student_presentations,
        presentations,
        terms: export.terms.clone(),
        columns: SnapshotColumns {
            keys: KEY_COLUMNS.iter().map(|s| (*s).to_owned()).collect(),
            active: ACTIVE_COLUMN.to_owned(),
            labels: vec![RESULT_COLUMN.to_owned(), LABEL_COLUMN.to_owned()],
            features: FeatureSchema::standard().without(&export.absent),
        },
        timings,
    };
    let path = staging.join(MANIFEST_FILE);
    let mut file = File::create(&path).map_err(write_err(&path))?;
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| IngestError::Write {
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    file.write_all(&json).map_err(write_err(&path))?;
    file.sync_all().map_err(write_err(&path))?;
    Ok(manifest)
}
