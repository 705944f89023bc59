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
//! - [`bookings`]: slot booking on partner bays, status workflow, hold caps.
//! - [`partners`]: onboarding workflow, catalogue, inventory and reservations, ratings.
//! - [`matching`]: nearest qualified open shops with a free slot (R-tree), ranked.
//! - [`fx`]: stored rates, conversions as linked legs plus a spread leg.
//! - [`invoices`]: monthly fleet invoices (unpaid bookings, subscription, usage).
//! - [`privacy`]: export and erasure of a driver's data, tracking consent.
//! - [`recommendations`]: maintenance events → recommended service with matched shops →
//!   booking.

pub mod bookings;
pub mod error;
pub mod fx;
pub mod gateway;
pub mod idempotency;
pub mod invoices;
pub mod ledger;
pub mod matching;
pub mod partners;
pub mod payments;
pub mod privacy;
pub mod recommendations;

pub use error::{Result, ServiceError};
