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
    // Webhooks and reports (api/src/webhooks.rs, api/src/reports.rs).
    ("GET", "/api/v1/webhooks", MANAGE),
    ("POST", "/api/v1/webhooks", MANAGE),
    ("GET", "/api/v1/webhooks/{id}", MANAGE),
    ("PATCH", "/api/v1/webhooks/{id}", MANAGE),
    ("DELETE", "/api/v1/webhooks/{id}", MANAGE),
    ("GET", "/api/v1/webhooks/{id}/deliveries", MANAGE),
    ("GET", "/api/v1/reports/daily", OWN),
];

/// Routes that need no credentials.
pub const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
];

pub fn allowed(method: &Method, path: &str, role: Role) -> bool {
    TABLE
        .iter()
        .any(|(m, p, roles)| *m == method.as_str() && *p == path && roles.contains(&role))
}
