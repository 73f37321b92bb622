//! The sign-in page: the form (with its own CSRF cookie), the password check with lockout, and
//! signing out.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::{St, render};
use crate::session::{self, SIGNIN_COOKIE, SignInRefused, SignedIn};
use crate::{AppState, PageError};

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    csrf: String,
    error: Option<String>,
    username: String,
}

fn signin_page(
    state: &AppState,
    status: StatusCode,
    error: Option<String>,
    username: String,
) -> Result<Response, PageError> {
    let csrf = session::random_token();
    let mut response = render(&SignInPage {
        csrf: csrf.clone(),
        error,
        username,
    })?;
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(state, SIGNIN_COOKIE, &csrf, 1800),
    );
    Ok(response)
}

/// The sign-in form.
pub async fn signin_form(State(state): St) -> Result<Response, PageError> {
    signin_page(&state, StatusCode::OK, None, String::new())
}

/// A sign-in.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Checks the form's token against its cookie, then the password.
pub async fn signin(
    State(state): St,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Result<Response, PageError> {
    let cookie = session::cookie(&headers, SIGNIN_COOKIE).unwrap_or("");
    if f.csrf.is_empty() || !session::constant_time_eq(cookie.as_bytes(), f.csrf.as_bytes()) {
        return Err(PageError::Csrf);
    }
    match session::check_password(&state, f.username.trim(), &f.password).await? {
        Ok(user) => {
            tracing::info!(user = %user.username, "signed in");
            session::start(&state, &user).await
        }
        Err(SignInRefused::Wrong) => signin_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong name or password.".into()),
            f.username,
        ),
        Err(SignInRefused::Locked(until)) => signin_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "Too many failed attempts: this account is locked until {} UTC.",
                until.get(..16).unwrap_or(&until).replace('T', " ")
            )),
            f.username,
        ),
    }
}

/// A form that only carries its token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Signs out.
pub async fn signout(
    State(state): St,
    s: SignedIn,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    s.check_csrf(&f.csrf)?;
    session::end(&state, &headers).await
}
