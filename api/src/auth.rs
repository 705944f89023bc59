//! Credentials: argon2id passwords, HS256 access tokens, rotating refresh tokens, API
//! keys, TOTP, and the lockout that slows password guessing.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::ApiError;

/// The six roles. What each may do is the table in [`crate::perm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    FleetManager,
    Dispatcher,
    Driver,
    Customer,
    Partner,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::FleetManager,
        Role::Dispatcher,
        Role::Driver,
        Role::Customer,
        Role::Partner,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::FleetManager => "fleet_manager",
            Role::Dispatcher => "dispatcher",
            Role::Driver => "driver",
            Role::Customer => "customer",
            Role::Partner => "partner",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// argon2id with the crate's defaults (19 MiB, 2 passes), as OWASP recommends.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(secret.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Verifying against this when the email is unknown makes an unknown email cost the
/// same time as a wrong password, so timing does not reveal which emails exist.
pub fn dummy_verify(secret: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let h = DUMMY.get_or_init(|| hash_secret("not a real password"));
    let _ = verify_secret(secret, h);
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

/// Equal-time comparison for digests.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Password rules: long enough to matter, short enough not to be a hashing DoS.
pub fn check_password_policy(p: &str) -> Result<(), ApiError> {
    let n = p.chars().count();
    if n < 10 {
        return Err(ApiError::validation("password", "must be at least 10 characters"));
    }
    if p.len() > 256 {
        return Err(ApiError::validation("password", "must be at most 256 bytes"));
    }
    Ok(())
}

/// Access-token claims. Short-lived; the user row is re-read on every request, so a
/// disabled user or a changed role takes effect at once anyway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tid: i64,
    pub iat: i64,
    pub exp: i64,
    pub typ: String,
}

#[derive(Clone)]
pub struct JwtKeys {
    enc: EncodingKey,
    dec: DecodingKey,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<redacted>)")
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> JwtKeys {
        JwtKeys {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
        }
    }

    pub fn issue(&self, user_id: i64, tenant_id: i64, ttl: Duration) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            tid: tenant_id,
            iat: now,
            exp: now + ttl.num_seconds(),
            typ: "access".into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.enc).expect("HS256 encoding cannot fail")
    }

    /// Only HS256 with our key, unexpired (5 s leeway for clock skew between replicas).
    /// `alg: none` and every other algorithm are refused by the fixed algorithm list.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.dec, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::unauthorized("access token expired"),
            _ => ApiError::unauthorized("invalid access token"),
        })?;
        if data.claims.typ != "access" {
            return Err(ApiError::unauthorized("invalid access token"));
        }
        Ok(data.claims)
    }
}

/// Delay after `failures` consecutive failures: none below the threshold, then 30 s
/// doubling per further failure, at most 15 minutes.
pub fn lockout_delay(failures: i32, threshold: u32) -> Option<Duration> {
    let over = failures - threshold as i32;
    if over < 0 {
        return None;
    }
    let secs = 30i64.saturating_mul(1i64 << over.min(10));
    Some(Duration::seconds(secs.min(900)))
}

pub fn totp_for(secret_b32: &str) -> Option<totp_rs::TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret_b32.to_string()).to_bytes().ok()?;
    // SHA-1, 6 digits, 30 s, one step of skew: what every authenticator app speaks.
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).ok()
}

pub fn totp_check(secret_b32: &str, code: &str) -> bool {
    totp_for(secret_b32).is_some_and(|t| t.check_current(code.trim()).unwrap_or(false))
}

pub fn new_totp_secret() -> String {
    let mut b = [0u8; 20];
    rand::rng().fill_bytes(&mut b);
    match totp_rs::Secret::Raw(b.to_vec()).to_encoded() {
        totp_rs::Secret::Encoded(s) => s,
        totp_rs::Secret::Raw(_) => unreachable!("to_encoded returns Encoded"),
    }
}

/// An API key: `ck_<prefix>_<secret>`. The prefix is stored in clear to find the row.
pub fn new_api_key() -> (String, String) {
    let mut p = [0u8; 6];
    rand::rng().fill_bytes(&mut p);
    let prefix = hex::encode(p);
    (format!("ck_{prefix}_{}", random_token()), prefix)
}

pub fn api_key_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ck_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 12 && !secret.is_empty()).then_some(prefix)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

pub fn expires(ttl_s: u64) -> DateTime<Utc> {
    Utc::now() + Duration::seconds(ttl_s as i64)
}

pub fn sha256_bytes(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}
