//! Idempotency keys.
//!
//! The source of truth is a row in `idempotency_keys`, unique per (tenant,
//! key), written in the effect's transaction with the response (status +
//! body bytes). The key is claimed by the **first statement** of that
//! transaction: on PostgreSQL an insert of the row, completed with the
//! response at the end; on SQLite a lookup, and the row is inserted, with
//! the response, at the end (the single writer runs nothing else in
//! between). Consequences:
//!
//! - a committed row always carries its response, and nothing else is ever
//!   visible (an aborted attempt leaves no row, so its retry runs afresh —
//!   failures are not stored, because they wrote nothing);
//! - a concurrent duplicate blocks on the unique key until the first one
//!   commits (PostgreSQL), or simply runs after it (SQLite's single
//!   writer), then finds the row and answers with the stored bytes: one
//!   effect, identical answers;
//! - the same key with a different request (fingerprint = sha256 of method,
//!   path with query, and body) is `PAY_003`.
//!
//! Records are kept at least 24 h (`database.idempotency_retention_hours`);
//! `serve` purges older ones hourly.

use sha2::{Digest, Sha256};

use super::error::{AppError, Result};
use super::{Reply, RequestCtx};
use crate::store::{Claim, IdempotencyClaim, Queries, Store, Tx, TxOps};

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A request's key and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// sha256 (hex) of method, path with query, and body.
    pub fingerprint: String,
}

impl Idempotency {
    /// Validates the key (1–255 visible ASCII characters) and fingerprints
    /// the request.
    pub fn new(key: &str, method: &str, path_and_query: &str, body: &[u8]) -> Result<Self> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AppError::Invalid(format!(
                "Idempotency-Key must be 1-{MAX_KEY_LEN} visible ASCII characters"
            )));
        }
        Ok(Idempotency {
            key: key.to_owned(),
            fingerprint: fingerprint(method, path_and_query, body),
        })
    }
}

/// sha256 of `METHOD \n path?query \n body`, lower-case hex.
pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b"\n");
    hash.update(path_and_query.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}

/// What [`claim`] decided.
// Returned once per request and matched at once: boxing the transaction
// would cost an allocation on every write for no saving.
#[allow(clippy::large_enum_variant)]
pub enum Claimed {
    /// The key is ours (or the request has none): go on in this transaction.
    Proceed(Tx),
    /// The same request ran before: answer with its stored response (the
    /// transaction was rolled back).
    Replay(Reply),
}

/// The first statement of an idempotent command. A key used by a different
/// request is [`AppError::IdempotencyConflict`] (`PAY_003`).
pub async fn claim(mut tx: Tx, ctx: &RequestCtx, now: i64) -> Result<Claimed> {
    match claim_in(&mut tx, ctx, now).await? {
        None => Ok(Claimed::Proceed(tx)),
        Some(answer) => {
            tx.rollback().await?;
            answer.map(Claimed::Replay)
        }
    }
}

/// [`claim`] in a write job ([`crate::store::Store::write`]), which owns
/// its transaction: `None` if the job goes on; else the answer — the stored
/// reply to replay, or `PAY_003` — with which the job undoes its
/// transaction.
pub async fn claim_in(tx: &mut Tx, ctx: &RequestCtx, now: i64) -> Result<Option<Result<Reply>>> {
    let Some(idempotency) = &ctx.idempotency else {
        return Ok(None);
    };
    let claim = IdempotencyClaim {
        key: idempotency.key.clone(),
        fingerprint: idempotency.fingerprint.clone(),
        now,
    };
    match tx.claim_idempotency(&claim).await? {
        Claim::Claimed => Ok(None),
        taken => Ok(Some(answer_of(idempotency, taken))),
    }
}

/// The stored answer of an earlier request with this request's key, as
/// last committed, read outside any transaction: lets a command whose
/// work starts with a policy call (`usage/close`) replay without calling
/// it. `None`: no earlier request (the transaction's [`claim`] decides).
pub async fn stored_answer(store: &Store, ctx: &RequestCtx) -> Result<Option<Result<Reply>>> {
    let Some(idempotency) = &ctx.idempotency else {
        return Ok(None);
    };
    Ok(store
        .idempotency_record(&ctx.tenant, &idempotency.key)
        .await?
        .map(|taken| answer_of(idempotency, taken)))
}

/// What a taken key answers: the stored reply, or `PAY_003`.
fn answer_of(idempotency: &Idempotency, taken: Claim) -> Result<Reply> {
    let Claim::Taken {
        fingerprint,
        response,
    } = taken
    else {
        unreachable!("only taken keys have an answer");
    };
    if fingerprint != idempotency.fingerprint {
        return Err(AppError::IdempotencyConflict(
            "this Idempotency-Key was already used for a different request".into(),
        ));
    }
    match response {
        Some(response) => Ok(Reply {
            response,
            replayed: true,
        }),
        // Cannot happen with the write path above (the row is completed in
        // the transaction that inserts it); answered as a conflict rather
        // than trusted.
        None => Err(AppError::IdempotencyConflict(
            "a request with this Idempotency-Key is still in flight; retry later".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_cover_method_path_and_body() {
        let base = fingerprint("POST", "/api/v1/credits/use", b"{}");
        assert_eq!(base.len(), 64);
        assert_eq!(base, fingerprint("POST", "/api/v1/credits/use", b"{}"));
        assert_ne!(base, fingerprint("PUT", "/api/v1/credits/use", b"{}"));
        assert_ne!(base, fingerprint("POST", "/api/v1/credits/use?x=1", b"{}"));
        assert_ne!(base, fingerprint("POST", "/api/v1/credits/use", b"{ }"));
    }

    #[test]
    fn keys_must_be_visible_ascii_of_bounded_length() {
        assert!(Idempotency::new("k-1", "POST", "/", b"").is_ok());
        for bad in ["", "a b", "é", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert!(Idempotency::new(bad, "POST", "/", b"").is_err(), "{bad:?}");
        }
    }
}
