//! Sign-in, sessions and CSRF. Passwords are checked against argon2 hashes; a session is a random
//! id in a `Secure` (when configured), `HttpOnly`, `SameSite=Strict` cookie whose SHA-256 is
//! stored with the session's CSRF token; every form carries that token and a POST without it is
//! refused. The sign-in form, before any session, carries a token matched against a short-lived
//! cookie (double submit). Repeated failures lock the account for a while.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use lodestar_store::{Session, User};
use sha2::{Digest, Sha256};

use crate::{AppState, PageError};

/// The session cookie.
pub const SESSION_COOKIE: &str = "lodestar_session";
/// The sign-in form's double-submit cookie.
pub const SIGNIN_COOKIE: &str = "lodestar_signin";

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored form of a session id.
pub fn id_hash(id: &str) -> String {
    hex(&Sha256::digest(id.as_bytes()))
}

/// A cookie's value from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value with the dashboard's attributes.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in user, from the session cookie; pages without one redirect to sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Session);

impl SignedIn {
    /// The user.
    pub fn user(&self) -> &User {
        &self.0.user
    }

    /// Whether the user is an admin.
    pub fn is_admin(&self) -> bool {
        self.0.user.role == "admin"
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), PageError> {
        if !token.is_empty() && constant_time_eq(token.as_bytes(), self.0.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(PageError::Csrf)
        }
    }

    /// Refuses unless an admin.
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(PageError::NotFound)
        }
    }
}

/// Compares without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Arc<AppState>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<SignedIn, Response> {
        let to_signin = || Redirect::to("/signin").into_response();
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_signin());
        };
        match state.store.session(&id_hash(id)).await {
            Ok(Some(session)) => Ok(SignedIn(session)),
            Ok(None) => Err(to_signin()),
            Err(e) => Err(PageError::Store(e.to_string()).into_response()),
        }
    }
}

/// Why a sign-in was refused (the page says no more than "wrong name or password", or the lock).
#[derive(Debug, PartialEq, Eq)]
pub enum SignInRefused {
    /// Unknown user or wrong password.
    Wrong,
    /// Locked until then (RFC 3339).
    Locked(String),
}

/// Checks a name and password; counts failures and locks after `lockout_failures`.
pub async fn check_password(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<Result<User, SignInRefused>, lodestar_store::StoreError> {
    let Some(s) = state.store.sign_in_state(username).await? else {
        // Spend the same effort on an unknown name as on a wrong password.
        let _ = verify(&state.dummy_hash, password);
        return Ok(Err(SignInRefused::Wrong));
    };
    let now = chrono::Utc::now();
    if let Some(until) = &s.locked_until
        && chrono::DateTime::parse_from_rfc3339(until).is_ok_and(|t| t > now)
    {
        return Ok(Err(SignInRefused::Locked(until.clone())));
    }
    if verify(&s.user.password_hash, password) {
        state.store.sign_in_succeeded(s.user.id).await?;
        return Ok(Ok(s.user));
    }
    let until = (now + chrono::Duration::minutes(state.config.lockout_minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let failed = state
        .store
        .sign_in_failed(s.user.id, state.config.lockout_failures, &until)
        .await?;
    if failed >= state.config.lockout_failures {
        return Ok(Err(SignInRefused::Locked(until)));
    }
    Ok(Err(SignInRefused::Wrong))
}

/// A hash of a random password, verified against for unknown names.
pub fn dummy_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(random_token().as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Starts a session for `user`: the response sets its cookie and goes to the caseload.
pub async fn start(state: &AppState, user: &User) -> Result<Response, PageError> {
    let id = random_token();
    let expires = chrono::Utc::now() + chrono::Duration::hours(state.config.session_hours);
    state
        .store
        .create_session(
            &id_hash(&id),
            user.id,
            &random_token(),
            &expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
        .await
        .map_err(|e| PageError::Store(e.to_string()))?;
    let mut response = Redirect::to("/caseload").into_response();
    let headers = response.headers_mut();
    headers.append(
        SET_COOKIE,
        set_cookie(
            state,
            SESSION_COOKIE,
            &id,
            state.config.session_hours * 3600,
        ),
    );
    headers.append(SET_COOKIE, set_cookie(state, SIGNIN_COOKIE, "", 0));
    Ok(response)
}

/// Ends the session of this request and clears its cookie.
pub async fn end(state: &AppState, headers: &HeaderMap) -> Result<Response, PageError> {
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        state
            .store
            .delete_session(&id_hash(id))
            .await
            .map_err(|e| PageError::Store(e.to_string()))?;
    }
    let mut response = Redirect::to("/signin").into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, set_cookie(state, SESSION_COOKIE, "", 0));
    Ok(response)
}

/// 403 for a form without its token.
pub fn csrf_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this site. Go back, reload the page and try again.",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_tokens_differ() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; lodestar_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
