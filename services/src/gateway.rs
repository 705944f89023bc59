//! Payment gateways: the [`Gateway`] trait every provider implements, the deterministic
//! [`SandboxGateway`] for development and tests, and verification of signed incoming
//! webhooks.
//!
//! Every call carries an idempotency key derived from our own records (`capture:17`,
//! `refund:4`), so a call repeated after a crash is the same call to the provider and
//! cannot charge twice.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub type GatewayFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, GatewayError>> + Send + 'a>>;

/// A provider's answer when it is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// A final refusal (card declined, insufficient funds at the issuer).
    #[error("declined: {0}")]
    Declined(String),
    /// Unreachable, timed out, or answered something we could not read: the outcome is
    /// unknown and the same call must be retried with the same key.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A card (or other external method) payment provider.
pub trait Gateway: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Reserve `amount` on the payment method; returns the provider's reference.
    fn authorize<'a>(
        &'a self,
        key: &'a str,
        method: &'a str,
        currency: &'a str,
        amount: i64,
    ) -> GatewayFuture<'a, String>;
    fn capture<'a>(&'a self, key: &'a str, reference: &'a str, amount: i64) -> GatewayFuture<'a, ()>;
    fn void<'a>(&'a self, key: &'a str, reference: &'a str) -> GatewayFuture<'a, ()>;
    fn refund<'a>(&'a self, key: &'a str, reference: &'a str, amount: i64) -> GatewayFuture<'a, ()>;
}

/// A deterministic in-process gateway. The payment method string decides the outcome:
/// `tok_decline` is declined, `tok_unavailable` fails as unreachable, anything else
/// succeeds. Calls are idempotent by key, and it counts the distinct money movements it
/// performed so tests can prove nothing was charged twice.
#[derive(Debug, Default)]
pub struct SandboxGateway {
    calls: Mutex<HashMap<String, Result<String, GatewayError>>>,
}

impl SandboxGateway {
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct (non-replayed) calls that moved money, by operation prefix of the key.
    pub fn performed(&self, op: &str) -> usize {
        self.lock()
            .iter()
            .filter(|(k, v)| k.starts_with(op) && v.is_ok())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Result<String, GatewayError>>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn once(&self, key: &str, f: impl FnOnce() -> Result<String, GatewayError>) -> Result<String, GatewayError> {
        let mut calls = self.lock();
        if let Some(r) = calls.get(key) {
            return r.clone();
        }
        let r = f();
        // An unavailable answer is not remembered: the retry is a real second attempt.
        if !matches!(r, Err(GatewayError::Unavailable(_))) {
            calls.insert(key.to_owned(), r.clone());
        }
        r
    }
}

impl Gateway for SandboxGateway {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn authorize<'a>(
        &'a self,
        key: &'a str,
        method: &'a str,
        _currency: &'a str,
        amount: i64,
    ) -> GatewayFuture<'a, String> {
        Box::pin(async move {
            self.once(key, || match method {
                "tok_decline" => Err(GatewayError::Declined("card declined".into())),
                "tok_unavailable" => Err(GatewayError::Unavailable("sandbox told to be down".into())),
                _ if amount <= 0 => Err(GatewayError::Declined("invalid amount".into())),
                _ => Ok(format!("sbx_{key}")),
            })
        })
    }

    fn capture<'a>(&'a self, key: &'a str, reference: &'a str, _amount: i64) -> GatewayFuture<'a, ()> {
        Box::pin(async move { self.once(key, || Ok(reference.to_owned())).map(|_| ()) })
    }

    fn void<'a>(&'a self, key: &'a str, reference: &'a str) -> GatewayFuture<'a, ()> {
        Box::pin(async move { self.once(key, || Ok(reference.to_owned())).map(|_| ()) })
    }

    fn refund<'a>(&'a self, key: &'a str, reference: &'a str, _amount: i64) -> GatewayFuture<'a, ()> {
        Box::pin(async move { self.once(key, || Ok(reference.to_owned())).map(|_| ()) })
    }
}

/// How far a webhook's timestamp may be from our clock.
pub const WEBHOOK_TOLERANCE_S: i64 = 300;

/// Why an incoming webhook was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("signature header malformed")]
    Malformed,
    #[error("timestamp outside the ±{WEBHOOK_TOLERANCE_S} s tolerance")]
    Stale,
    #[error("no signature matches")]
    BadSignature,
}

/// The signature a sender computes: hex HMAC-SHA256 over `"{timestamp}.{body}"`.
pub fn sign_webhook(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies a `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` header against any of `secrets`
/// (several during a key rotation), in constant time, within the time tolerance.
pub fn verify_webhook(secrets: &[&[u8]], header: &str, body: &[u8], now_unix: i64) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(WebhookError::Malformed)?;
        match k {
            "t" => timestamp = Some(v.parse::<i64>().map_err(|_| WebhookError::Malformed)?),
            "v1" => signatures.push(hex::decode(v).map_err(|_| WebhookError::Malformed)?),
            _ => {} // other schemes are ignored, as senders add them over time
        }
    }
    let t = timestamp.ok_or(WebhookError::Malformed)?;
    if signatures.is_empty() {
        return Err(WebhookError::Malformed);
    }
    if (now_unix - t).abs() > WEBHOOK_TOLERANCE_S {
        return Err(WebhookError::Stale);
    }
    for secret in secrets {
        for sig in &signatures {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(t.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            // verify_slice compares in constant time.
            if mac.verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(WebhookError::BadSignature)
}
