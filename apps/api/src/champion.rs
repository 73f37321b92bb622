//! The champion model in memory: loaded at start, watched in the registry, and swapped without
//! a restart when the alias moves. A request takes the `Arc` of the model it started with, so a
//! swap never fails or mixes a request; the old model is dropped when its last request ends.
//! While the database is away the loaded model keeps serving and the API reports degraded.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lodestar_model::Artifact;
use lodestar_store::{CHAMPION, StoreError};

use crate::AppState;

/// A champion version, ready to score.
#[derive(Debug)]
pub struct Loaded {
    /// Registered model name.
    pub model: String,
    /// Version.
    pub version: i64,
    /// The artifact's SHA-256 (checked when loaded).
    pub sha256: String,
    /// The model.
    pub artifact: Artifact,
    /// When this process loaded it (RFC 3339).
    pub loaded_at: String,
}

/// The slot the watcher swaps.
#[derive(Debug, Default)]
pub struct ChampionSlot(RwLock<Option<Arc<Loaded>>>);

impl ChampionSlot {
    /// The model serving now, if one is loaded.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.0
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set(&self, loaded: Arc<Loaded>) {
        match self.0.write() {
            Ok(mut g) => *g = Some(loaded),
            Err(p) => *p.into_inner() = Some(loaded),
        }
    }
}

/// What one look at the registry found.
#[derive(Debug, PartialEq, Eq)]
pub enum Refresh {
    /// The loaded version is still the champion.
    Unchanged,
    /// A new champion was loaded.
    Swapped {
        /// The version before, if one was loaded.
        from: Option<i64>,
        /// The version now.
        to: i64,
    },
    /// The model has no champion yet.
    NoChampion,
}

/// Looks at the champion alias once and loads the version it names when it moved.
pub async fn refresh(state: &AppState) -> Result<Refresh, StoreError> {
    let model = &state.config.model;
    let result = state.store.alias(model, CHAMPION).await;
    state.db_ok.store(
        !matches!(&result, Err(e) if e.is_unreachable()),
        Ordering::Relaxed,
    );
    let Some(version) = result? else {
        return Ok(Refresh::NoChampion);
    };
    let from = state.champion.current().map(|c| c.version);
    if from == Some(version) {
        return Ok(Refresh::Unchanged);
    }
    let v = state.store.version(model, version).await?;
    let bytes = state.artifacts.load(&v.artifact).await?;
    let artifact = Artifact::from_bytes(&bytes)
        .map_err(|e| StoreError::Invalid(format!("artifact {}: {e}", v.artifact.uri)))?;
    state.champion.set(Arc::new(Loaded {
        model: model.clone(),
        version,
        sha256: v.artifact.sha256.clone(),
        artifact,
        loaded_at: crate::now(),
    }));
    metrics::gauge!("lodestar_model_version", "model" => model.clone()).set(version as f64);
    Ok(Refresh::Swapped { from, to: version })
}

/// Watches the registry every `watch_interval_ms` until `stop` turns true.
pub async fn watch(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = Duration::from_millis(state.config.watch_interval_ms.max(10));
    loop {
        match refresh(&state).await {
            Ok(Refresh::Swapped { from, to }) => {
                tracing::info!(model = %state.config.model, from, to, "champion swapped")
            }
            Ok(_) => {}
            Err(e) if e.is_unreachable() => {
                tracing::warn!(error = %e, "store unreachable: serving the loaded model")
            }
            Err(e) => tracing::error!(error = %e, "champion not reloaded"),
        }
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
