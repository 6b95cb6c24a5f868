//! The SQL schema and its embedded migrations.
//!
//! Tables close to Auth.js's adapter schema, in snake_case: `users`,
//! `accounts`, `sessions`, `verification_tokens`; beside them
//! `portcullis_kv` (counters, bans, refresh locks) and `portcullis_set`
//! (the token deny list). Times are Unix seconds (`expires`,
//! `created_at`), except `portcullis_kv.expires`, in milliseconds.
//!
//! What must not leak is never stored in the clear: `sessions` is keyed
//! by the SHA-256 of the cookie's id and its `data` is sealed (AES-256),
//! `verification_tokens.token` is a keyed hash of the mailed token, and
//! the user / subject indexes are hashes. Users and accounts are plain
//! rows (as in Auth.js), readable with a team's own tools.
//!
//! `portcullis_schema` holds the version. A migration runs at most once
//! (each statement is idempotent as well: two replicas starting at once
//! both succeed); a database at a version newer than this binary knows is
//! refused rather than written with an older idea of the schema.

use crate::store::SqlKind;

/// The newest schema version this binary knows.
pub const LATEST: i64 = 1;

/// Version 1, in the dialect of `kind`: one statement per entry.
fn v1(kind: SqlKind) -> Vec<String> {
    // Key columns: MySQL indexes only bounded strings.
    let (key, text, data) = match kind {
        SqlKind::MySql => ("VARCHAR(255)", "TEXT", "MEDIUMTEXT"),
        _ => ("TEXT", "TEXT", "TEXT"),
    };
    let email = match kind {
        SqlKind::MySql => "VARCHAR(320)",
        _ => "TEXT",
    };
    let table_options = match kind {
        SqlKind::MySql => " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        _ => "",
    };
    // MySQL has no CREATE INDEX IF NOT EXISTS: its indexes live in the
    // CREATE TABLE statements.
    let inline = |idx: &str| match kind {
        SqlKind::MySql => format!(",\n  {idx}"),
        _ => String::new(),
    };
    let mut out = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS users (
  id {key} NOT NULL PRIMARY KEY,
  name {text} NULL,
  email {email} NULL UNIQUE,
  email_verified BIGINT NULL,
  image {text} NULL,
  created_at BIGINT NOT NULL
){table_options}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS accounts (
  id {key} NOT NULL PRIMARY KEY,
  user_id {key} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  type {key} NOT NULL,
  provider {key} NOT NULL,
  provider_account_id {key} NOT NULL,
  created_at BIGINT NOT NULL,
  UNIQUE (provider, provider_account_id){}
){table_options}",
            inline("INDEX accounts_user_id (user_id)")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS sessions (
  session_token {key} NOT NULL PRIMARY KEY,
  user_id {key} NOT NULL,
  user_key {key} NOT NULL,
  subject_key {key} NULL,
  data {data} NOT NULL,
  created_at BIGINT NOT NULL,
  expires BIGINT NOT NULL{}{}{}
){table_options}",
            inline("INDEX sessions_user_key (user_key)"),
            inline("INDEX sessions_subject_key (subject_key)"),
            inline("INDEX sessions_expires (expires)")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS verification_tokens (
  identifier {key} NOT NULL,
  token {key} NOT NULL PRIMARY KEY,
  data {text} NOT NULL,
  expires BIGINT NOT NULL{}
){table_options}",
            inline("INDEX verification_tokens_expires (expires)")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS portcullis_kv (
  name {key} NOT NULL PRIMARY KEY,
  value {text} NULL,
  counter BIGINT NOT NULL DEFAULT 0,
  expires BIGINT NOT NULL{}
){table_options}",
            inline("INDEX portcullis_kv_expires (expires)")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS portcullis_set (
  name {key} NOT NULL,
  item {key} NOT NULL,
  PRIMARY KEY (name, item)
){table_options}"
        ),
    ];
    if kind != SqlKind::MySql {
        for (name, table, col) in [
            ("accounts_user_id", "accounts", "user_id"),
            ("sessions_user_key", "sessions", "user_key"),
            ("sessions_subject_key", "sessions", "subject_key"),
            ("sessions_expires", "sessions", "expires"),
            (
                "verification_tokens_expires",
                "verification_tokens",
                "expires",
            ),
            ("portcullis_kv_expires", "portcullis_kv", "expires"),
        ] {
            out.push(format!(
                "CREATE INDEX IF NOT EXISTS {name} ON {table} ({col})"
            ));
        }
    }
    out
}

/// The statements that bring a database from `version - 1` to `version`.
pub fn migration(kind: SqlKind, version: i64) -> Vec<String> {
    match version {
        1 => v1(kind),
        _ => Vec::new(),
    }
}

/// The version table (created before anything else is read).
pub fn version_table(kind: SqlKind) -> String {
    let opts = match kind {
        SqlKind::MySql => " ENGINE=InnoDB",
        _ => "",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS portcullis_schema (version BIGINT NOT NULL PRIMARY KEY){opts}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_up_to_latest_has_statements() {
        for kind in [SqlKind::Postgres, SqlKind::MySql, SqlKind::Sqlite] {
            for v in 1..=LATEST {
                assert!(!migration(kind, v).is_empty(), "{kind:?} v{v}");
            }
            assert!(migration(kind, LATEST + 1).is_empty());
            // Idempotent statements only: a migration interrupted half way,
            // or run by two replicas at once, runs again cleanly.
            for s in migration(kind, 1) {
                assert!(s.contains("IF NOT EXISTS"), "{s}");
            }
        }
    }
}
