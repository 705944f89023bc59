//! `services`: the platform domains around the telemetry — the payments ledger,
//! payments, bookings and partners — as plain functions over PostgreSQL, with no HTTP
//! types (the `api` crate exposes them).
//!
//! Correctness lives as much in the schema (`store/migrations/0009_services.sql`) as
//! here: balanced postings, immutable entries, no wallet overdraft, capture ≤ authorised,
//! refunds ≤ captured and no overlapping bookings are database constraints, so they hold
//! under any concurrency; this crate adds the workflows and turns the database's
//! refusals into [`ServiceError`]s.
//!
//! # Layout
//! - [`ledger`]: accounts, balanced postings, reversals, checks, exact splitting.
//! - [`payments`]: intents (authorise/capture/void/refund, split parts), settlement with
//!   commission, payouts, wallets.
//! - [`gateway`]: the gateway trait, the deterministic sandbox, signed webhooks.
//! - [`idempotency`]: idempotency keys for creating requests.
//! - [`bookings`]: slot booking on partner bays, status workflow.

pub mod bookings;
pub mod error;
pub mod gateway;
pub mod idempotency;
pub mod ledger;
pub mod payments;

pub use error::{Result, ServiceError};
