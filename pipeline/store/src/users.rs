//! Dashboard users and signing in: users (their password hashes made by the caller),
//! server-side sessions (the cookie's id stored as a hash, with the session's CSRF token),
//! sign-in failures and lockout.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, now};

/// A dashboard user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Sign-in name.
    pub username: String,
    /// `advisor` or `admin`.
    pub role: String,
    /// Password hash (argon2, made by the dashboard).
    pub password_hash: String,
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Who.
    pub user: User,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When it ends (RFC 3339).
    pub expires_at: String,
}

/// A user's sign-in state.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInState {
    /// The user.
    pub user: User,
    /// Failures since the last success.
    pub failed: i64,
    /// Refused until then (RFC 3339).
    pub locked_until: Option<String>,
}

/// A user from a row holding `id`, `username`, `role` and `password_hash`.
pub(crate) fn user_from(r: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: r.try_get("role")?,
        password_hash: r.try_get("password_hash")?,
    })
}

impl Store {
    /// Creates a user (the password hash is made by the caller, e.g. argon2).
    pub async fn create_user(
        &self,
        username: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<i64, StoreError> {
        if !["advisor", "admin"].contains(&role) {
            return Err(StoreError::Invalid(format!(
                "role {role:?}: use advisor or admin"
            )));
        }
        let row = sqlx::query(
            "INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(username)
        .bind(role)
        .bind(password_hash)
        .bind(now())
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Replaces a user's password hash and clears any lockout.
    pub async fn set_password_hash(
        &self,
        user_id: i64,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL WHERE id = $2",
        )
        .bind(password_hash)
        .bind(user_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A user by sign-in name.
    pub async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row =
            sqlx::query("SELECT id, username, role, password_hash FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(self.pool())
                .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, username, role, password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    /// A user's sign-in state, by name.
    pub async fn sign_in_state(&self, username: &str) -> Result<Option<SignInState>, StoreError> {
        let Some(user) = self.user(username).await? else {
            return Ok(None);
        };
        let r = sqlx::query("SELECT failed_logins, locked_until FROM users WHERE id = $1")
            .bind(user.id)
            .fetch_one(self.pool())
            .await?;
        Ok(Some(SignInState {
            failed: r.try_get("failed_logins")?,
            locked_until: r.try_get("locked_until")?,
            user,
        }))
    }

    /// Counts a failed sign-in; at `max_failures` the account is locked until `lock_until`.
    /// Returns the failures so far.
    pub async fn sign_in_failed(
        &self,
        user_id: i64,
        max_failures: i64,
        lock_until: &str,
    ) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
        )
        .bind(user_id)
        .fetch_one(self.pool())
        .await?;
        let failed: i64 = r.try_get("failed_logins")?;
        if failed >= max_failures {
            sqlx::query("UPDATE users SET locked_until = $1, failed_logins = 0 WHERE id = $2")
                .bind(lock_until)
                .bind(user_id)
                .execute(self.pool())
                .await?;
        }
        Ok(failed)
    }

    /// Clears failures and any lock after a successful sign-in.
    pub async fn sign_in_succeeded(&self, user_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Stores a session (by the hash of its cookie id).
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf: &str,
        expires_at: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now())
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(user_id)
        .bind(csrf)
        .bind(now())
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A live session by the hash of its cookie id.
    pub async fn session(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT s.csrf, s.expires_at, u.id, u.username, u.role, u.password_hash FROM sessions s \
             JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| -> Result<Session, StoreError> {
            Ok(Session {
                user: user_from(&r)?,
                csrf: r.try_get("csrf")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends a session.
    pub async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
