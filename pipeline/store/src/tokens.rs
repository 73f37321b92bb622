//! API tokens, stored as SHA-256 hashes (never in clear): created, verified (their last use
//! recorded), listed and revoked.

use sqlx::Row;

use crate::artifacts::sha256_hex;
use crate::{Store, StoreError, now};

/// An API token's record (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Id.
    pub id: i64,
    /// Label.
    pub name: String,
    /// Scopes, e.g. `predictions:read`.
    pub scopes: Vec<String>,
}

/// An API token as `lodestar tokens list` shows it (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// Id, name and scopes.
    pub token: ApiToken,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Revoked, if it was.
    pub revoked_at: Option<String>,
    /// Last seen by an API process (updated at most once per cache period).
    pub last_used_at: Option<String>,
}

impl Store {
    /// Records an API token by its hash; the token itself is never stored.
    pub async fn create_token(
        &self,
        name: &str,
        token: &str,
        scopes: &[&str],
    ) -> Result<i64, StoreError> {
        if token.len() < 24 {
            return Err(StoreError::Invalid(
                "an API token needs at least 24 characters".into(),
            ));
        }
        let row = sqlx::query("INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(name)
            .bind(sha256_hex(token.as_bytes()))
            .bind(scopes.join(" "))
            .bind(now())
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("id")?)
    }

    /// The live (not revoked) token record matching a presented token.
    pub async fn verify_token(&self, token: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, scopes FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(sha256_hex(token.as_bytes()))
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        let scopes: String = r.try_get("scopes")?;
        let id: i64 = r.try_get("id")?;
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(Some(ApiToken {
            id,
            name: r.try_get("name")?,
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        }))
    }

    /// Every token ever created, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, scopes, created_at, revoked_at, last_used_at FROM api_tokens ORDER BY id DESC",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let scopes: String = r.try_get("scopes")?;
                Ok(TokenInfo {
                    token: ApiToken {
                        id: r.try_get("id")?,
                        name: r.try_get("name")?,
                        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                    },
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                })
            })
            .collect()
    }

    /// Revokes a token; returns false if there was no live token with that id.
    pub async fn revoke_token(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
