//! The inbox folder: a new, complete export starts a run. Complete means written elsewhere and
//! renamed in (folders named `.…`, `….tmp`, `….partial` or `….part` are still being written),
//! or, with `pipeline.inbox_require_marker`, holding a `_READY` file. A picked export is moved
//! into the landed exports folder first, so it starts one run only and stays for the record.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The marker an exporter writes last.
pub const READY_MARKER: &str = "_READY";

fn in_progress(name: &str) -> bool {
    name.starts_with('.')
        || [".tmp", ".partial", ".part"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// Complete exports waiting in `inbox`, oldest name first.
pub fn ready_exports(inbox: &Path, require_marker: bool) -> io::Result<Vec<PathBuf>> {
    if !inbox.is_dir() {
        return Ok(vec![]);
    }
    let mut ready = Vec::new();
    for entry in fs::read_dir(inbox)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type()?.is_dir() || in_progress(&name) {
            continue;
        }
        let marked = entry.path().join(READY_MARKER).is_file();
        if marked || !require_marker {
            ready.push(entry.path());
        }
    }
    ready.sort();
    Ok(ready)
}

/// Moves `export` into `landed` as `<UTC time>-<name>` and returns its new place.
pub fn land(export: &Path, landed: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(landed)?;
    let name = export
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let target = landed.join(format!("{stamp}-{name}"));
    fs::rename(export, &target).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "moving {} to {}: {e} (keep the inbox and the exports folder on one file system)",
                export.display(),
                target.display()
            ),
        )
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_exports_are_picked_and_landing_moves_them() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        for name in ["b-renamed", "a-marked", ".c-writing", "d.tmp", "e.partial"] {
            fs::create_dir_all(inbox.join(name)).unwrap();
        }
        fs::write(inbox.join("a-marked").join(READY_MARKER), "").unwrap();
        fs::write(inbox.join("stray.csv"), "x").unwrap();
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(ready_exports(&inbox, false).unwrap()),
            ["a-marked", "b-renamed"]
        );
        assert_eq!(names(ready_exports(&inbox, true).unwrap()), ["a-marked"]);
        let landed = land(&inbox.join("a-marked"), &dir.path().join("exports")).unwrap();
        assert!(landed.join(READY_MARKER).is_file());
        assert!(!inbox.join("a-marked").exists());
        assert!(
            landed
                .file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("-a-marked")
        );
        assert!(
            ready_exports(&dir.path().join("missing"), false)
                .unwrap()
                .is_empty()
        );
    }
}
