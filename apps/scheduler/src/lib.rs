//! The nightly pipeline and its scheduler. [`dag::PIPELINE`] declares the steps (ingest →
//! features → train → evaluate → register → gate → score → drift → notify); [`Pipeline::run`]
//! runs them once, recorded in the store with hashes, cached, retried and timed out, under a
//! lease that admits one run across every replica; [`service`] triggers runs from the cron
//! schedule (with one catch-up after downtime) and the inbox folder, and serves the run status
//! over HTTP.

pub mod config;
pub mod dag;
pub mod failpoints;
pub mod inbox;
pub mod runner;
pub mod schedule;
pub mod scoring;
pub mod service;
pub mod steps;

use std::path::PathBuf;

pub use config::PipelineConfig;
pub use failpoints::Failpoints;
use lodestar_store::{ArtifactStore, LeaseHolder, Store, StoreError};
pub use runner::{Event, Outcome, Trigger};

/// What can stop the scheduler (a failing step is recorded in its run, not returned).
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or socket failed.
    #[error("{0}")]
    Io(String),
}

/// Everything a run needs.
#[derive(Debug)]
pub struct Pipeline {
    /// The store (runs, registry, predictions).
    pub store: Store,
    /// Where artifacts go.
    pub artifacts: ArtifactStore,
    /// Where snapshots go.
    pub snapshot_root: PathBuf,
    /// Configuration.
    pub config: PipelineConfig,
    /// This scheduler, as the lease records it.
    pub holder: LeaseHolder,
    /// Failpoints (tests only).
    pub failpoints: Failpoints,
}

impl Pipeline {
    /// A pipeline over `store`, with this process as the lease holder.
    pub fn new(
        store: Store,
        artifacts: ArtifactStore,
        snapshot_root: PathBuf,
        config: PipelineConfig,
    ) -> Result<Pipeline, SchedulerError> {
        config.validate()?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        let pid = i64::from(std::process::id());
        Ok(Pipeline {
            store,
            artifacts,
            snapshot_root,
            config,
            holder: LeaseHolder {
                id: format!("{host}:{pid}"),
                host,
                pid,
            },
            failpoints: Failpoints::from_env().map_err(SchedulerError::Config)?,
        })
    }
}
