//! Bearer tokens and their scopes, and the rate limit per token. Tokens are stored as SHA-256
//! hashes; a verified (or refused) token is cached for `token_cache_seconds`, so a request does
//! not touch the database and a revocation takes effect within that period. The token's id,
//! never the token, goes into the request log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use lodestar_store::ApiToken;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::problem::ApiError;

/// Read stored predictions, the registry and cohorts.
pub const PREDICTIONS_READ: &str = "predictions:read";
/// Score posted rows and leave feedback.
pub const PREDICTIONS_WRITE: &str = "predictions:write";
/// Start and follow pipeline runs.
pub const PIPELINE_RUN: &str = "pipeline:run";
/// Everything.
pub const ADMIN: &str = "admin";
/// Every scope a token may carry.
pub const SCOPES: [&str; 4] = [PREDICTIONS_READ, PREDICTIONS_WRITE, PIPELINE_RUN, ADMIN];

/// Who is calling, once their token checked out.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's record.
    pub token: ApiToken,
}

impl Caller {
    /// Refuses with 403 unless the token has `scope` (or `admin`).
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.token.scopes.iter().any(|s| s == scope || s == ADMIN) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "token {} lacks the scope {scope} (it has: {})",
                    self.token.id,
                    self.token.scopes.join(" ")
                ),
            ))
        }
    }
}

/// Where the request log finds the caller's token id.
#[derive(Debug, Clone, Default)]
pub struct TokenSlot(pub Arc<OnceLock<i64>>);

type Digest32 = [u8; 32];

/// Verified and refused tokens, by hash.
#[derive(Debug, Default)]
pub struct TokenCache(Mutex<HashMap<Digest32, (Option<ApiToken>, Instant)>>);

impl TokenCache {
    fn get(&self, key: &Digest32, ttl: Duration) -> Option<Option<ApiToken>> {
        let map = self.0.lock().ok()?;
        let (token, at) = map.get(key)?;
        (at.elapsed() < ttl).then(|| token.clone())
    }

    fn put(&self, key: Digest32, token: Option<ApiToken>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() > 10_000 {
                map.clear();
            }
            map.insert(key, (token, Instant::now()));
        }
    }
}

/// A token bucket per token id.
#[derive(Debug, Default)]
pub struct RateLimiter(Mutex<HashMap<i64, (f64, Instant)>>);

impl RateLimiter {
    /// Takes one request from `id`'s bucket (`rate` per second, up to `burst`); when empty,
    /// the seconds until one is free.
    pub fn take(&self, id: i64, rate: f64, burst: f64) -> Result<(), u64> {
        if rate <= 0.0 {
            return Ok(());
        }
        let Ok(mut map) = self.0.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let (level, at) = map.entry(id).or_insert((burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *level) / rate).ceil() as u64)
        }
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let unauthorized = |d: &str| ApiError::new(StatusCode::UNAUTHORIZED, d);
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthorized(
                "no token: send `Authorization: Bearer TOKEN` (tokens come from `lodestar tokens create`)",
            )
        })?;
    let text = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer TOKEN`"))?;
    Ok(token)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let token = bearer(parts)?;
        let key: Digest32 = Sha256::digest(token.as_bytes()).into();
        let ttl = Duration::from_secs(state.config.token_cache_seconds);
        let found = match state.tokens.get(&key, ttl) {
            Some(found) => found,
            None => {
                let found = state
                    .store
                    .verify_token(token)
                    .await
                    .map_err(|e| ApiError::store(&e))?;
                state.tokens.put(key, found.clone());
                found
            }
        };
        let Some(token) = found else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the token is unknown or revoked",
            ));
        };
        if let Some(slot) = parts.extensions.get::<TokenSlot>() {
            let _ = slot.0.set(token.id);
        }
        state
            .limiter
            .take(
                token.id,
                state.config.rate_per_second,
                state.config.rate_burst,
            )
            .map_err(ApiError::rate_limited)?;
        Ok(Caller { token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_refuses_with_a_wait() {
        let l = RateLimiter::default();
        for _ in 0..5 {
            assert_eq!(l.take(1, 1.0, 5.0), Ok(()));
        }
        assert_eq!(l.take(1, 1.0, 5.0), Err(1));
        // Another token has its own bucket; a rate of 0 is unlimited.
        assert_eq!(l.take(2, 1.0, 5.0), Ok(()));
        for _ in 0..100 {
            assert_eq!(l.take(3, 0.0, 0.0), Ok(()));
        }
    }
}
