//! Session reads, batched: the hot path of the `database` strategy.
//!
//! Every request with a session cookie reads its row. One query per
//! request would spend most of its time in the driver and the server's
//! per-statement work, so reads that arrive while others are being
//! answered go out together, as one `SELECT ... WHERE session_token IN
//! (...)` (the way a Redis client pipelines commands on one connection).
//! Nothing is cached: each read is answered by a query sent after it
//! arrived, so a sign-out anywhere is seen by the next request.
//!
//! A batch holds up to [`MAX_BATCH`] reads, padded to one of a few sizes
//! so each connection keeps a handful of prepared statements; up to
//! [`IN_FLIGHT`] batches run at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, AssertSqlSafe, Row};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{SqlText, render, unavailable};
use crate::store::{SqlKind, StoreError};

const MAX_BATCH: usize = 64;
const SIZES: [usize; 4] = [1, 4, 16, MAX_BATCH];
/// Two, like the Redis reads: under load, the reads that arrive while both
/// are out wait for one to come back and go out together (fewer, larger
/// batches: less work per read for the server).
const IN_FLIGHT: usize = 2;

type Reply = oneshot::Sender<Result<Option<String>, StoreError>>;

struct Read {
    hash: String,
    now: i64,
    reply: Reply,
}

/// The sending side; the batching task ends when it is dropped.
pub(super) struct Lookups {
    tx: mpsc::Sender<Read>,
}

struct Batcher {
    pool: AnyPool,
    timeout: Duration,
    /// The statement for each of [`SIZES`].
    statements: Vec<SqlText>,
    stats: Arc<crate::metrics::Dependency>,
}

impl Lookups {
    /// Starts the batching task (on the current runtime).
    pub(super) fn start(
        pool: AnyPool,
        kind: SqlKind,
        timeout: Duration,
        stats: Arc<crate::metrics::Dependency>,
    ) -> Self {
        let statements = SIZES
            .iter()
            .map(|&n| {
                let marks = vec!["?"; n].join(", ");
                render(
                    kind,
                    &format!(
                        "SELECT session_token, data FROM sessions WHERE expires > ? AND session_token IN ({marks})"
                    ),
                )
                .into()
            })
            .collect();
        let (tx, rx) = mpsc::channel(4096);
        let batcher = Arc::new(Batcher {
            pool,
            timeout,
            statements,
            stats,
        });
        tokio::spawn(batcher.run(rx));
        Lookups { tx }
    }

    /// The sealed session stored under `hash`, if live at `now`.
    pub(super) async fn get(&self, hash: &str, now: i64) -> Result<Option<String>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Read {
                hash: hash.to_string(),
                now,
                reply,
            })
            .await
            .map_err(|_| unavailable("the session reader stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the session reader stopped"))?
    }
}

impl Batcher {
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Read>) {
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            drain(&mut rx, &mut batch);
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            // Reads that came while every batch was busy join this one.
            drain(&mut rx, &mut batch);
            let me = self.clone();
            tokio::spawn(async move {
                me.answer(batch).await;
                drop(permit);
            });
        }
    }

    async fn answer(&self, batch: Vec<Read>) {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.query(&batch)).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(unavailable("timed out")),
        };
        self.stats.record(started, &result);
        match result {
            Ok(found) => {
                // Several reads of one session (one user's parallel
                // requests) share its row.
                for read in batch {
                    let _ = read.reply.send(Ok(found.get(&read.hash).cloned()));
                }
            }
            Err(e) => {
                for read in batch {
                    let _ = read.reply.send(Err(StoreError::Unavailable(e.to_string())));
                }
            }
        }
    }

    /// One query for the whole batch: token hash → sealed session. A hash
    /// asked for twice (one user's parallel requests) is bound once.
    async fn query(&self, batch: &[Read]) -> Result<HashMap<String, String>, sqlx::Error> {
        let mut hashes: Vec<&str> = batch.iter().map(|r| r.hash.as_str()).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let size = SIZES
            .iter()
            .position(|&n| n >= hashes.len())
            .unwrap_or(SIZES.len() - 1);
        // The latest `now` of the batch: a row live then is live for
        // every read in it.
        let now = batch.iter().map(|r| r.now).max().unwrap_or(0);
        let mut q = sqlx::query(AssertSqlSafe(self.statements[size].clone())).bind(now);
        for i in 0..SIZES[size] {
            // Padding repeats the last hash.
            q = q.bind(hashes[i.min(hashes.len() - 1)].to_string());
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
        }
        Ok(found)
    }
}

fn drain(rx: &mut mpsc::Receiver<Read>, batch: &mut Vec<Read>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}
