//! Failpoints for the fault tests: `LODESTAR_FAILPOINTS="train=panic,score:before-commit=kill"`
//! makes a step (or a named point inside one) panic, fail, fail once, hang, or SIGKILL its
//! own process, so the tests exercise the real binary's recovery. Unset (always, in production), no
//! point does anything.

use std::collections::BTreeMap;

/// What a failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Panic.
    Panic,
    /// Return an error on every attempt.
    Error,
    /// Return an error on the first attempt only.
    ErrorOnce,
    /// SIGKILL this process.
    Kill,
    /// Never finish (until the step's timeout stops it).
    Hang,
}

/// Configured failpoints: `STEP` (at the start of each attempt), `STEP:after` (the step's work
/// done, not yet recorded), `score:staged` (the first chunk of scores staged), `score:before-commit`
/// (every chunk staged, not yet published).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints(BTreeMap<String, Action>);

impl Failpoints {
    /// Reads `LODESTAR_FAILPOINTS`.
    pub fn from_env() -> Result<Failpoints, String> {
        match std::env::var("LODESTAR_FAILPOINTS") {
            Ok(spec) if !spec.trim().is_empty() => Failpoints::parse(&spec),
            _ => Ok(Failpoints::default()),
        }
    }

    /// Parses `POINT=ACTION,…`.
    pub fn parse(spec: &str) -> Result<Failpoints, String> {
        let mut map = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (point, action) = part
                .split_once('=')
                .ok_or_else(|| format!("LODESTAR_FAILPOINTS: {part:?} is not POINT=ACTION"))?;
            let action = match action {
                "panic" => Action::Panic,
                "error" => Action::Error,
                "error-once" => Action::ErrorOnce,
                "kill" => Action::Kill,
                "hang" => Action::Hang,
                other => {
                    return Err(format!(
                        "LODESTAR_FAILPOINTS: unknown action {other:?} (panic, error, error-once, kill, hang)"
                    ));
                }
            };
            map.insert(point.to_owned(), action);
        }
        Ok(Failpoints(map))
    }

    /// Whether `step` is set to hang.
    pub fn hangs(&self, step: &str) -> bool {
        self.0.get(step) == Some(&Action::Hang)
    }

    /// At the start of attempt `attempt` of `step`.
    pub fn fail(&self, step: &str, attempt: u32) -> Result<(), String> {
        match self.0.get(step) {
            Some(Action::Error) => Err(format!("failpoint {step}: injected error")),
            Some(Action::ErrorOnce) if attempt == 1 => {
                Err(format!("failpoint {step}: injected error (first attempt)"))
            }
            Some(Action::ErrorOnce) | None => Ok(()),
            Some(action) => {
                act(step, *action);
                Ok(())
            }
        }
    }

    /// At a named point.
    pub fn hit(&self, point: &str) {
        if let Some(action) = self.0.get(point) {
            act(point, *action);
        }
    }
}

fn act(point: &str, action: Action) {
    match action {
        Action::Panic => panic!("failpoint {point}: injected panic"),
        Action::Kill => {
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            // SIGKILL is not instant: never go on past the point.
            loop {
                std::thread::park();
            }
        }
        Action::Error | Action::ErrorOnce | Action::Hang => {}
    }
}
