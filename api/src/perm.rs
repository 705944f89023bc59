//! The role × route table. Deny by default: a route that is not listed here is refused to
//! every role, and a test checks that the table and the mounted routes agree.

use axum::http::Method;

use crate::auth::Role::{self, *};

const ALL: &[Role] = &[Admin, FleetManager, Dispatcher, Driver, Customer, Partner];
const ADMIN: &[Role] = &[Admin];
/// Configure the fleet: devices, vehicles, drivers, plans.
const MANAGE: &[Role] = &[Admin, FleetManager];
/// Run the fleet day to day: geofences, commands.
const OPS: &[Role] = &[Admin, FleetManager, Dispatcher];
/// See the fleet: partners integrate read-only.
const VIEW: &[Role] = &[Admin, FleetManager, Dispatcher, Partner];
/// Reads that drivers and customers get too, narrowed to their own objects (crate::scope).
const OWN: &[Role] = &[Admin, FleetManager, Dispatcher, Partner, Driver, Customer];

// Services (issue 9). Partners are one marketplace across tenants; the handlers scope
// per object on top of this table: a partner user sees only its own partner's bookings,
// a customer only their own bookings, payments and wallet, an admin manages only the
// partners its tenant operates (`api/src/resources/{partners,bookings,payments}.rs`).
/// Everyone who deals with the marketplace (drivers do not).
const MARKET: &[Role] = &[Admin, FleetManager, Dispatcher, Customer, Partner];
/// Book service for vehicles.
const BOOK: &[Role] = &[Admin, FleetManager, Dispatcher, Customer];
/// Keep a partner's catalogue, hours and stock: its operator's admins and its own users.
const KEEP: &[Role] = &[Admin, Partner];
/// Pay: the fleet's money people, and customers for their own bookings and wallet.
const PAY: &[Role] = &[Admin, FleetManager, Customer];

/// (method, full route path, roles). Paths are axum route templates.
pub const TABLE: &[(&str, &str, &[Role])] = &[
    ("GET", "/api/v1/me", ALL),
    ("POST", "/api/v1/me/password", ALL),
    ("POST", "/api/v1/me/totp", ALL),
    ("POST", "/api/v1/me/totp/confirm", ALL),
    ("GET", "/api/v1/tenants", ADMIN),
    ("GET", "/api/v1/tenants/{id}", ADMIN),
    ("PATCH", "/api/v1/tenants/{id}", ADMIN),
    ("GET", "/api/v1/users", MANAGE),
    ("POST", "/api/v1/users", ADMIN),
    ("GET", "/api/v1/users/{id}", MANAGE),
    ("PATCH", "/api/v1/users/{id}", ADMIN),
    ("DELETE", "/api/v1/users/{id}", ADMIN),
    ("GET", "/api/v1/api-keys", MANAGE),
    ("POST", "/api/v1/api-keys", MANAGE),
    ("DELETE", "/api/v1/api-keys/{id}", MANAGE),
    ("GET", "/api/v1/devices", VIEW),
    ("POST", "/api/v1/devices", MANAGE),
    ("GET", "/api/v1/devices/{id}", VIEW),
    ("PATCH", "/api/v1/devices/{id}", MANAGE),
    ("DELETE", "/api/v1/devices/{id}", MANAGE),
    ("POST", "/api/v1/devices/{id}/mqtt-credentials", MANAGE),
    ("GET", "/api/v1/devices/{id}/commands", OPS),
    ("POST", "/api/v1/devices/{id}/commands", OPS),
    ("GET", "/api/v1/commands/{id}", OPS),
    ("GET", "/api/v1/vehicles", OWN),
    ("POST", "/api/v1/vehicles", MANAGE),
    ("GET", "/api/v1/vehicles/{id}", OWN),
    ("PATCH", "/api/v1/vehicles/{id}", MANAGE),
    ("DELETE", "/api/v1/vehicles/{id}", MANAGE),
    ("GET", "/api/v1/drivers", VIEW),
    ("POST", "/api/v1/drivers", MANAGE),
    ("GET", "/api/v1/drivers/{id}", VIEW),
    ("PATCH", "/api/v1/drivers/{id}", MANAGE),
    ("DELETE", "/api/v1/drivers/{id}", MANAGE),
    ("GET", "/api/v1/drivers/{id}/assignments", VIEW),
    ("POST", "/api/v1/drivers/{id}/assignments", OPS),
    ("GET", "/api/v1/groups", VIEW),
    ("POST", "/api/v1/groups", MANAGE),
    ("GET", "/api/v1/groups/{id}", VIEW),
    ("PATCH", "/api/v1/groups/{id}", MANAGE),
    ("DELETE", "/api/v1/groups/{id}", MANAGE),
    ("GET", "/api/v1/positions/latest", OWN),
    ("GET", "/api/v1/positions/history", OWN),
    ("GET", "/api/v1/trips", OWN),
    ("GET", "/api/v1/trips/{id}", OWN),
    ("GET", "/api/v1/stops", VIEW),
    ("GET", "/api/v1/events", VIEW),
    ("POST", "/api/v1/events/{id}/ack", OPS),
    ("GET", "/api/v1/geofences", VIEW),
    ("POST", "/api/v1/geofences", OPS),
    ("GET", "/api/v1/geofences/{id}", VIEW),
    ("PATCH", "/api/v1/geofences/{id}", OPS),
    ("DELETE", "/api/v1/geofences/{id}", OPS),
    ("GET", "/api/v1/scores", OWN),
    ("GET", "/api/v1/fuel", VIEW),
    ("GET", "/api/v1/maintenance/dtcs", VIEW),
    ("GET", "/api/v1/maintenance/due", VIEW),
    ("GET", "/api/v1/service-plans", VIEW),
    ("POST", "/api/v1/service-plans", MANAGE),
    ("GET", "/api/v1/service-plans/{id}", VIEW),
    ("PATCH", "/api/v1/service-plans/{id}", MANAGE),
    ("DELETE", "/api/v1/service-plans/{id}", MANAGE),
    ("GET", "/api/v1/unknown-devices", ADMIN),
    ("GET", "/api/v1/stream", VIEW),
    ("GET", "/api/v1/stream/sse", VIEW),
    // Services (issue 9).
    ("GET", "/api/v1/partners", MARKET),
    ("POST", "/api/v1/partners", ADMIN),
    ("GET", "/api/v1/partners/match", BOOK),
    ("GET", "/api/v1/partners/{id}", MARKET),
    ("PATCH", "/api/v1/partners/{id}", ADMIN),
    ("DELETE", "/api/v1/partners/{id}", ADMIN),
    ("GET", "/api/v1/partners/{id}/transitions", ADMIN),
    ("POST", "/api/v1/partners/{id}/transitions", ADMIN),
    ("GET", "/api/v1/partners/{id}/members", ADMIN),
    ("POST", "/api/v1/partners/{id}/members", ADMIN),
    ("GET", "/api/v1/partners/{id}/services", MARKET),
    ("POST", "/api/v1/partners/{id}/services", KEEP),
    ("GET", "/api/v1/partners/{id}/hours", MARKET),
    ("PUT", "/api/v1/partners/{id}/hours", KEEP),
    ("GET", "/api/v1/partners/{id}/slots", MARKET),
    ("GET", "/api/v1/partners/{id}/parts", KEEP),
    ("POST", "/api/v1/partners/{id}/parts", KEEP),
    ("GET", "/api/v1/partners/{id}/reservations", KEEP),
    ("POST", "/api/v1/partners/{id}/reservations", KEEP),
    ("POST", "/api/v1/reservations/{id}/finish", KEEP),
    ("GET", "/api/v1/partners/{id}/ratings", MARKET),
    ("POST", "/api/v1/partners/{id}/ratings", BOOK),
    ("GET", "/api/v1/bookings", MARKET),
    ("POST", "/api/v1/bookings", BOOK),
    ("POST", "/api/v1/bookings/bulk", OPS),
    ("GET", "/api/v1/bookings/{id}", MARKET),
    ("POST", "/api/v1/bookings/{id}/transitions", MARKET),
    ("GET", "/api/v1/recommendations", BOOK),
    ("GET", "/api/v1/recommendations/{id}", BOOK),
    ("POST", "/api/v1/recommendations/{id}/accept", BOOK),
    ("POST", "/api/v1/recommendations/{id}/dismiss", BOOK),
    ("GET", "/api/v1/payments", PAY),
    ("POST", "/api/v1/payments", PAY),
    ("GET", "/api/v1/payments/{id}", PAY),
    ("POST", "/api/v1/payments/{id}/authorize", PAY),
    ("POST", "/api/v1/payments/{id}/capture", MANAGE),
    ("POST", "/api/v1/payments/{id}/void", PAY),
    ("POST", "/api/v1/payments/{id}/settle", ADMIN),
    ("GET", "/api/v1/refunds", PAY),
    ("POST", "/api/v1/refunds", MANAGE),
    ("GET", "/api/v1/invoices", MANAGE),
    ("POST", "/api/v1/invoices", ADMIN),
    ("GET", "/api/v1/invoices/{id}", MANAGE),
    ("GET", "/api/v1/wallets", PAY),
    ("POST", "/api/v1/wallets/top-ups", PAY),
    ("GET", "/api/v1/wallets/entries", PAY),
    ("GET", "/api/v1/payouts", KEEP),
    ("POST", "/api/v1/payouts", ADMIN),
    // Admin (issue 9): audit, bulk, export, health, privacy; consent (api/src/admin/).
    ("GET", "/api/v1/admin/audit", ADMIN),
    ("POST", "/api/v1/admin/import/devices", MANAGE),
    ("POST", "/api/v1/admin/import/vehicles", MANAGE),
    ("POST", "/api/v1/admin/bulk/driver-assignments", MANAGE),
    ("POST", "/api/v1/admin/bulk/group-members", MANAGE),
    ("GET", "/api/v1/admin/export/{kind}", ADMIN),
    ("GET", "/api/v1/admin/health", ADMIN),
    ("GET", "/api/v1/admin/privacy/drivers/{id}/export", ADMIN),
    ("POST", "/api/v1/admin/privacy/drivers/{id}/erase", ADMIN),
    ("GET", "/api/v1/drivers/{id}/consent", MANAGE),
    ("PUT", "/api/v1/drivers/{id}/consent", ADMIN),
    ("DELETE", "/api/v1/drivers/{id}/consent", ADMIN),
    // Webhooks and reports (api/src/webhooks.rs, api/src/reports.rs).
    ("GET", "/api/v1/webhooks", MANAGE),
    ("POST", "/api/v1/webhooks", MANAGE),
    ("GET", "/api/v1/webhooks/{id}", MANAGE),
    ("PATCH", "/api/v1/webhooks/{id}", MANAGE),
    ("DELETE", "/api/v1/webhooks/{id}", MANAGE),
    ("GET", "/api/v1/webhooks/{id}/deliveries", MANAGE),
    ("GET", "/api/v1/reports/daily", OWN),
    // Links that scope drivers and customers (api/src/scope.rs).
    ("PUT", "/api/v1/users/{id}/driver", ADMIN),
    ("PUT", "/api/v1/vehicles/{id}/owner", MANAGE),
];

/// Routes that need no credentials.
pub const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    // The gateway's signature is the authentication (services::gateway::verify_webhook).
    ("POST", "/api/v1/payments/webhook"),
];

pub fn allowed(method: &Method, path: &str, role: Role) -> bool {
    TABLE
        .iter()
        .any(|(m, p, roles)| *m == method.as_str() && *p == path && roles.contains(&role))
}
