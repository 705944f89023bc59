//! Resources, the role matrix, the tenant-isolation sweep, the OpenAPI inventory, live.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use api::auth::Role;
use api::perm::{PUBLIC, TABLE};
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

const IMEI_A: &str = "356307042441013";
const VIN_A: &str = "1HGBH41JXMN109186";
const MARK: &str = "ALPHA-MARK";

/// Objects of one tenant, created through the API (and the store for operator output).
struct Seed {
    ids: HashMap<&'static str, i64>,
    /// The id of one of its events (events have a string id, not a number).
    event: String,
}

async fn seed(app: &App, tok: &str, tenant_id: i64, imei: &str, vin: &str, mark: &str) -> Seed {
    let mut ids = HashMap::new();
    let post = |path: &'static str, body: Value| async move {
        let r = app.call("POST", path, Some(tok), Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.text);
        r.json["id"].as_i64().unwrap()
    };
    let v = post(
        "/api/v1/vehicles",
        json!({"name": format!("{mark} van"), "vin": vin, "plate": mark}),
    )
    .await;
    ids.insert("vehicles", v);
    let d = post(
        "/api/v1/drivers",
        json!({"name": format!("{mark} drv"), "external_id": format!("{mark}-card")}),
    )
    .await;
    ids.insert("drivers", d);
    let dev = post(
        "/api/v1/devices",
        json!({"identifier": imei, "protocol": "teltonika", "name": mark, "vehicle_id": v, "driver_id": d}),
    )
    .await;
    ids.insert("devices", dev);
    ids.insert(
        "groups",
        post(
            "/api/v1/groups",
            json!({"name": format!("{mark} grp"), "vehicle_ids": [v]}),
        )
        .await,
    );
    ids.insert(
        "geofences",
        post(
            "/api/v1/geofences",
            json!({"name": format!("{mark} depot"), "geojson": {"type": "Polygon",
                "coordinates": [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1], [13.0, 52.0]]]}}),
        )
        .await,
    );
    ids.insert(
        "service-plans",
        post(
            "/api/v1/service-plans",
            json!({"vehicle_id": v, "name": format!("{mark} oil"), "every_km": 15000.0}),
        )
        .await,
    );
    let r = app
        .call(
            "POST",
            &format!("/api/v1/devices/{dev}/commands"),
            Some(tok),
            Some(json!({"command": {"type": "engine_stop"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    ids.insert("commands", r.json["id"].as_i64().unwrap());
    let r = app
        .call(
            "POST",
            &format!("/api/v1/drivers/{d}/assignments"),
            Some(tok),
            Some(json!({"vehicle_id": v})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let u = app
        .call(
            "POST",
            "/api/v1/users",
            Some(tok),
            Some(
                json!({"email": format!("{}@victim.example.com", mark.to_lowercase()), "role": "driver", "name": mark}),
            ),
        )
        .await;
    ids.insert("users", u.json["id"].as_i64().unwrap());
    let k = app
        .call(
            "POST",
            "/api/v1/api-keys",
            Some(tok),
            Some(json!({"name": mark, "scopes": ["read"]})),
        )
        .await;
    ids.insert("api-keys", k.json["id"].as_i64().unwrap());
    ids.insert("tenants", tenant_id);
    // A webhook, inserted directly: its URL need not pass the SSRF check here.
    let hook: i64 = sqlx::query_scalar(
        "INSERT INTO webhooks (tenant_id, url, kinds, description, secret) VALUES ($1, $2, '{}', $3, 'whsec_x') RETURNING id",
    )
    .bind(tenant_id)
    .bind(format!("https://{}.example.com/hook", mark.to_lowercase()))
    .bind(mark)
    .fetch_one(app.pool())
    .await
    .unwrap();
    ids.insert("webhooks", hook);
    // Operator output: a trip, events, a score, positions.
    let t0 = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    let trip = store::query::upsert_trip(
        app.pool(),
        &store::query::TripRow {
            device_id: dev,
            start_time: t0,
            end_time: Some(t0 + chrono::Duration::minutes(30)),
            start_lat: Some(52.0),
            start_lon: Some(13.0),
            end_lat: Some(52.1),
            end_lon: Some(13.1),
            distance_m: Some(20_000.0),
            max_speed_kmh: Some(90.0),
            avg_speed_kmh: Some(40.0),
            fuel_used_l: Some(1.6),
            driver_id: Some(d),
            attributes: json!({"mark": mark}),
        },
    )
    .await
    .unwrap();
    ids.insert("trips", trip);
    for (i, (kind, mag)) in [
        ("refuel", 40.0),
        ("fuel_theft", 12.0),
        ("dtc", 0.0),
        ("overspeed", 31.0),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO events (device_id, time, kind, magnitude, severity, attributes) VALUES ($1, $2, $3, $4, 'high', $5)",
        )
        .bind(dev)
        .bind(t0 + chrono::Duration::minutes(i as i64))
        .bind(kind)
        .bind(mag)
        .bind(json!({"mark": mark, "code": "P0301"}))
        .execute(app.pool())
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO scores (tenant_id, subject_kind, subject_id, period, period_start, score, breakdown) \
         VALUES ($1, 'driver', $2, 'day', $3, 87.5, $4)",
    )
    .bind(tenant_id)
    .bind(d)
    .bind(t0)
    .bind(json!({"mark": mark}))
    .execute(app.pool())
    .await
    .unwrap();
    app.publish(ingest::DeviceBatch {
        device_id: dev,
        positions: (0..600).map(|s| pos(dev, s, 52.0 + s as f64 * 1e-4, 13.0)).collect(),
        events: vec![],
    })
    .await;
    seed_services(app, tok, tenant_id, v, dev, mark, &mut ids).await;
    Seed {
        ids,
        event: api::resources::telemetry::event_id(dev, t0, "refuel"),
    }
}

/// Services objects of one tenant (issue 9): a partner it operates (suspended at the
/// end, so other tenants cannot see it in the marketplace), a part reservation, a
/// booking, a captured and partly refunded payment, an invoice, a recommendation.
async fn seed_services(
    app: &App,
    tok: &str,
    tenant_id: i64,
    v: i64,
    dev: i64,
    mark: &str,
    ids: &mut HashMap<&'static str, i64>,
) {
    let post = |path: String, body: Value| async move {
        let r = app.call("POST", &path, Some(tok), Some(body)).await;
        assert!(r.status.is_success(), "{path}: {}", r.text);
        r.json
    };
    let p = post(
        "/api/v1/partners".into(),
        json!({"name": format!("{mark} garage"), "kind": "repair_center", "lat": 52.0, "lon": 13.0}),
    )
    .await;
    let p = p["id"].as_i64().unwrap();
    ids.insert("partners", p);
    for to in ["documents_submitted", "approved", "active"] {
        post(format!("/api/v1/partners/{p}/transitions"), json!({"to": to})).await;
    }
    let s = post(
        format!("/api/v1/partners/{p}/services"),
        json!({"service": "diagnostics", "price_minor": 9900, "duration_min": 60}),
    )
    .await;
    post(
        format!("/api/v1/partners/{p}/parts"),
        json!({"sku": "PAD-1", "name": format!("{mark} pads"), "price_minor": 100, "stock": 5}),
    )
    .await;
    let r = post(
        format!("/api/v1/partners/{p}/reservations"),
        json!({"sku": "PAD-1", "quantity": 1}),
    )
    .await;
    ids.insert("reservations", r["id"].as_i64().unwrap());
    let start = (chrono::Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    let b = post(
        "/api/v1/bookings".into(),
        json!({"vehicle_id": v, "partner_id": p, "service_id": s["id"], "start": start}),
    )
    .await;
    let b = b["id"].as_i64().unwrap();
    ids.insert("bookings", b);
    let pay = post("/api/v1/payments".into(), json!({"booking_id": b})).await;
    let pay = pay["id"].as_i64().unwrap();
    ids.insert("payments", pay);
    post(
        format!("/api/v1/payments/{pay}/authorize"),
        json!({"card_token": "tok_visa"}),
    )
    .await;
    post(format!("/api/v1/payments/{pay}/capture"), json!({})).await;
    post("/api/v1/refunds".into(), json!({"payment_id": pay, "amount": 100})).await;
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let inv = post(
        "/api/v1/invoices".into(),
        json!({"month": month, "currency": "EUR", "per_active_device": 100, "per_100_km": 10}),
    )
    .await;
    ids.insert("invoices", inv["id"].as_i64().unwrap());
    let rec: i64 = sqlx::query_scalar(
        "INSERT INTO recommendations (tenant_id, vehicle_id, device_id, event_kind, event_time, service, reason) \
         VALUES ($1, $2, $3, 'dtc_raised', now(), 'diagnostics', $4) RETURNING id",
    )
    .bind(tenant_id)
    .bind(v)
    .bind(dev)
    .bind(format!("P0301: {mark} misfire"))
    .fetch_one(app.pool())
    .await
    .unwrap();
    ids.insert("recommendations", rec);
    post(format!("/api/v1/partners/{p}/transitions"), json!({"to": "suspended"})).await;
}

fn range() -> &'static str {
    "from=2026-09-21T00:00:00Z&to=2026-09-23T00:00:00Z"
}

/// The route with its `{id}` taken from a seed (the privacy routes take a driver's).
fn route_url(path: &str, seed: &Seed) -> Option<String> {
    let key = path
        .strip_prefix("/api/v1/admin/privacy")
        .map_or(path.to_string(), |p| format!("/api/v1{p}"));
    let seg = key.strip_prefix("/api/v1/")?.split('/').next()?;
    if seg == "events" {
        return Some(path.replace("{id}", &seed.event));
    }
    seed.ids.get(seg).map(|id| path.replace("{id}", &id.to_string()))
}

/// A plausible body for a route, so that a refusal is about ownership, not syntax.
fn body_for(method: &str, path: &str, own_vehicle: i64) -> Option<Value> {
    match (method, path) {
        ("PATCH", _) if path.ends_with("/tenants/{id}") => Some(json!({"name": "hijacked"})),
        ("PATCH", p) if p.starts_with("/api/v1/webhooks") => Some(json!({"description": "hijacked"})),
        ("PATCH", _) => Some(json!({"name": "hijacked"})),
        ("PUT", p) if p.ends_with("/driver") => Some(json!({"driver_id": null})),
        ("PUT", p) if p.ends_with("/owner") => Some(json!({"user_id": null})),
        ("POST", p) if p.ends_with("/commands") => Some(json!({"command": {"type": "engine_stop"}})),
        ("POST", p) if p.ends_with("/assignments") => Some(json!({"vehicle_id": own_vehicle})),
        // Services (issue 9).
        ("POST", "/api/v1/partners/{id}/transitions") => Some(json!({"to": "suspended"})),
        ("POST", "/api/v1/partners/{id}/members") => Some(json!({"user_id": 1})),
        ("POST", "/api/v1/partners/{id}/services") => {
            Some(json!({"service": "hijacked", "price_minor": 1, "duration_min": 60}))
        }
        ("PUT", "/api/v1/partners/{id}/hours") => Some(json!({"time_zone": "UTC", "opening_hours": {}, "capacity": 1})),
        ("POST", "/api/v1/partners/{id}/parts") => {
            Some(json!({"sku": "PAD-1", "name": "hijacked", "price_minor": 1, "stock": 9}))
        }
        ("POST", "/api/v1/partners/{id}/reservations") => Some(json!({"sku": "PAD-1", "quantity": 1})),
        ("POST", "/api/v1/reservations/{id}/finish") => Some(json!({"consume": false})),
        ("POST", "/api/v1/partners/{id}/ratings") => Some(json!({"booking_id": 1, "stars": 5})),
        ("POST", "/api/v1/bookings/{id}/transitions") => Some(json!({"to": "cancelled"})),
        ("POST", "/api/v1/recommendations/{id}/accept") => {
            Some(json!({"partner_id": 1, "service_id": 1, "start": "2030-01-01T10:00:00Z"}))
        }
        ("POST", "/api/v1/payments/{id}/authorize") => Some(json!({"card_token": "tok_visa"})),
        ("PUT", p) if p.ends_with("/consent") => Some(json!({"track_outside_hours": false, "time_zone": "UTC",
            "working_hours": {"mon": [["08:00", "09:00"]]}})),
        _ => None,
    }
}

#[tokio::test]
async fn tenant_isolation_sweep_over_every_route() {
    let app = app().await;
    let (ta, a) = app.tenant_user("Alpha", Role::Admin).await;
    let (tb, b) = app.tenant_user("Beta", Role::Admin).await;
    let sa = seed(&app, &a, ta, IMEI_A, VIN_A, MARK).await;
    let sb = seed(&app, &b, tb, "861234567890123", "WVWZZZ1JZXW000001", "BETA-MARK").await;
    let a_dev = sa.ids["devices"];
    let a_veh = sa.ids["vehicles"];

    let mut exercised = Vec::new();
    for (method, path, _) in TABLE {
        // Routes about the caller's own account or global data have no other tenant's object.
        if path.starts_with("/api/v1/me") || path.starts_with("/api/v1/stream") || *path == "/api/v1/unknown-devices" {
            exercised.push((method, path));
            continue;
        }
        if path.contains("{kind}") {
            // Exports: A's device or vehicle is a 404; B's own export has none of A's rows.
            for kind in ["positions", "events", "trips"] {
                let base = path.replace("{kind}", kind);
                for filter in [format!("device_id={a_dev}"), format!("vehicle_id={a_veh}")] {
                    let r = app
                        .call("GET", &format!("{base}?{}&{filter}", range()), Some(&b), None)
                        .await;
                    assert_eq!(r.status, StatusCode::NOT_FOUND, "{base} {filter}: {}", r.text);
                }
                let r = app
                    .call("GET", &format!("{base}?{}&format=ndjson", range()), Some(&b), None)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{base}: {}", r.text);
                assert!(r.text.lines().count() > 0, "{base}: B's own rows");
                for line in r.text.lines() {
                    let v: Value = serde_json::from_str(line).unwrap();
                    assert_ne!(v["device_id"], a_dev, "{base}: {line}");
                    assert!(!line.contains(MARK), "{base}: {line}");
                }
            }
            exercised.push((method, path));
            continue;
        }
        if path.contains("{id}") {
            let url = route_url(path, &sa).unwrap_or_else(|| panic!("no seed id for {path}"));
            let r = app
                .call(method, &url, Some(&b), body_for(method, path, sb.ids["vehicles"]))
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {url} as B: {}", r.text);
            assert_eq!(r.json["error"]["code"], "not_found");
            exercised.push((method, path));
            continue;
        }
        if *method == "GET" {
            // Lists, and lookups by natural key and by A's ids in filters.
            for query in [
                String::new(),
                format!("?identifier={IMEI_A}"),
                format!("?vin={VIN_A}"),
                format!("?q={MARK}"),
                format!("?device_id={a_dev}&{}", range()),
                format!("?vehicle_id={a_veh}&{}", range()),
                format!("?external_id={MARK}-card"),
                format!("?group_id={}", sa.ids["groups"]),
            ] {
                let url = format!("{path}{query}");
                let r = app.call("GET", &url, Some(&b), None).await;
                assert!(
                    r.status == StatusCode::OK
                        || r.status == StatusCode::NOT_FOUND
                        || r.status == StatusCode::UNPROCESSABLE_ENTITY
                        || r.status == StatusCode::BAD_REQUEST,
                    "{url}: {} {}",
                    r.status,
                    r.text
                );
                for needle in [MARK, IMEI_A, VIN_A] {
                    assert!(!r.text.contains(needle), "B sees A's {needle} via {url}: {}", r.text);
                }
                if r.status == StatusCode::OK
                    && let Some(items) = r.json["items"].as_array()
                {
                    for it in items {
                        assert_ne!(it.get("device_id").and_then(Value::as_i64), Some(a_dev), "{url}");
                    }
                }
            }
            exercised.push((method, path));
            continue;
        }
        // Bulk routes: A's objects named in B's rows are row errors, and nothing happens.
        if path.starts_with("/api/v1/admin/") {
            let (ct, body) = match *path {
                "/api/v1/admin/import/devices" => (
                    "text/csv",
                    format!(
                        "identifier,protocol,vehicle_id,driver_external_id\n111111111111111,gt06,{a_veh},\n\
                             222222222222222,gt06,,{MARK}-card\n"
                    ),
                ),
                "/api/v1/admin/import/vehicles" => {
                    ("text/csv", format!("name,group_id\nstolen,{}\n", sa.ids["groups"]))
                }
                "/api/v1/admin/bulk/driver-assignments" => (
                    "application/json",
                    json!({"assignments": [{"driver_id": sa.ids["drivers"], "vehicle_id": sb.ids["vehicles"]},
                                           {"driver_id": sb.ids["drivers"], "vehicle_id": a_veh}]})
                    .to_string(),
                ),
                "/api/v1/admin/bulk/group-members" => (
                    "application/json",
                    json!({"group_id": sb.ids["groups"], "vehicle_ids": [a_veh]}).to_string(),
                ),
                other => panic!("no isolation case for POST {other}"),
            };
            let r = app
                .send(
                    axum::http::Request::post(*path)
                        .header("authorization", format!("Bearer {b}"))
                        .header("content-type", ct)
                        .body(axum::body::Body::from(body))
                        .unwrap(),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
            assert_eq!(r.json["applied"], 0, "{path}: {}", r.text);
            assert!(r.json["failed"].as_u64() > Some(0), "{path}: {}", r.text);
            // B's group by A's id is a 404.
            if *path == "/api/v1/admin/bulk/group-members" {
                let r = app
                    .call(
                        method,
                        path,
                        Some(&b),
                        Some(json!({"group_id": sa.ids["groups"], "vehicle_ids": []})),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::NOT_FOUND);
            }
            exercised.push((method, path));
            continue;
        }
        // Creating POSTs: referencing A's objects from B's new objects is refused too.
        let body = match *path {
            "/api/v1/devices" => json!({"identifier": "111111111111111", "protocol": "gt06", "vehicle_id": a_veh}),
            "/api/v1/groups" => json!({"name": "steal", "vehicle_ids": [a_veh]}),
            "/api/v1/service-plans" => json!({"vehicle_id": a_veh, "name": "x", "every_days": 30}),
            "/api/v1/vehicles" | "/api/v1/drivers" | "/api/v1/geofences" | "/api/v1/users" | "/api/v1/api-keys"
            | "/api/v1/webhooks" => {
                exercised.push((method, path));
                continue;
            }
            // Services: B's own partner, invoice and wallet cannot name A's objects.
            "/api/v1/partners" | "/api/v1/invoices" | "/api/v1/wallets/top-ups" => {
                exercised.push((method, path));
                continue;
            }
            "/api/v1/bookings" => {
                json!({"vehicle_id": a_veh, "partner_id": sa.ids["partners"], "service": "diagnostics",
                "start": "2030-01-01T10:00:00Z"})
            }
            "/api/v1/bookings/bulk" => json!({"partner_id": sa.ids["partners"], "service": "diagnostics",
                "items": [{"vehicle_id": a_veh, "start": "2030-01-01T10:00:00Z"}]}),
            "/api/v1/payments" => json!({"booking_id": sa.ids["bookings"]}),
            "/api/v1/refunds" => json!({"payment_id": sa.ids["payments"], "amount": 1}),
            "/api/v1/payouts" => {
                // A partner named in the body that the caller does not operate: 404, like an unknown one.
                let r = app
                    .call(method, path, Some(&b), Some(json!({"partner_id": sa.ids["partners"]})))
                    .await;
                assert_eq!(
                    r.status,
                    StatusCode::NOT_FOUND,
                    "POST {path} with A's partner: {}",
                    r.text
                );
                exercised.push((method, path));
                continue;
            }
            other => panic!("no isolation case for POST {other}"),
        };
        let r = app.call(method, path, Some(&b), Some(body)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "POST {path} with A's ids: {}",
            r.text
        );
        exercised.push((method, path));
    }
    assert_eq!(exercised.len(), TABLE.len());

    // No side effect on A: everything is still there, unchanged.
    for (res, id) in &sa.ids {
        let url = match *res {
            "api-keys" | "reservations" => continue,
            "commands" => format!("/api/v1/commands/{id}"),
            r => format!("/api/v1/{r}/{id}"),
        };
        let r = app.call("GET", &url, Some(&a), None).await;
        assert_eq!(r.status, StatusCode::OK, "{url}");
        assert!(!r.text.contains("hijacked"), "{url}: {}", r.text);
    }
    let keys = app.call("GET", "/api/v1/api-keys", Some(&a), None).await;
    assert!(keys.text.contains(MARK));
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM device_commands WHERE device_id = $1")
        .bind(a_dev)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    let hash: Option<String> = sqlx::query_scalar("SELECT mqtt_secret_hash FROM devices WHERE id = $1")
        .bind(a_dev)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(hash.is_none());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM driver_assignments WHERE driver_id = $1")
        .bind(sa.ids["drivers"])
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    // A's driver was neither erased nor given a consent rule; nothing was imported for B
    // against A's objects; A's group did not grow.
    let drv = app
        .call("GET", &format!("/api/v1/drivers/{}", sa.ids["drivers"]), Some(&a), None)
        .await;
    assert!(drv.json["name"].as_str().unwrap().contains(MARK), "{}", drv.text);
    let consent: i64 = sqlx::query_scalar("SELECT count(*) FROM driver_consent")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(consent, 0);
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM devices WHERE identifier IN ('111111111111111', '222222222222222')")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(n, 0);
    let g = app
        .call("GET", &format!("/api/v1/groups/{}", sa.ids["groups"]), Some(&a), None)
        .await;
    assert_eq!(g.json["vehicle_ids"], json!([a_veh]));
    // B's audit trail holds B's attempts, A's none of them.
    let trail = app.call("GET", "/api/v1/admin/audit?limit=500", Some(&a), None).await;
    assert!(
        !trail.text.contains("hijacked") && !trail.text.contains("stolen"),
        "A sees B's rows"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_acks")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "B acknowledged A's event");
}

#[tokio::test]
async fn role_matrix_is_deny_by_default() {
    let app = app().await;
    let t = app.tenant("Acme").await;
    let mut tokens = HashMap::new();
    for role in Role::ALL {
        let email = format!("{}@acme.example.com", role.as_str());
        app.user(t, &email, role).await;
        tokens.insert(role, app.login(&email).await);
    }
    let admin = tokens[&Role::Admin].clone();
    let s = seed(&app, &admin, t, IMEI_A, VIN_A, MARK).await;
    let mut checked = 0;
    for (method, path, roles) in TABLE {
        for role in Role::ALL {
            let url = route_url(path, &s).unwrap_or_else(|| path.replace("{kind}", "positions"));
            let status = if path.ends_with("/stream/sse") {
                // A stream never ends: look at the status only.
                let req = axum::http::Request::get(&url)
                    .header("authorization", format!("Bearer {}", tokens[&role]))
                    .body(axum::body::Body::empty())
                    .unwrap();
                use tower::ServiceExt;
                app.router.clone().oneshot(req).await.unwrap().status()
            } else {
                // DELETE last: run it on a throwaway object so later roles still find theirs.
                app.call(
                    method,
                    &url,
                    Some(&tokens[&role]),
                    body_for(method, path, s.ids["vehicles"]),
                )
                .await
                .status
            };
            if roles.contains(&role) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{role:?} must be allowed {method} {path}, got {status}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role:?} must be refused {method} {path}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, TABLE.len() * 6);
    // Spot checks of intent.
    assert!(!api::perm::allowed(
        &axum::http::Method::POST,
        "/api/v1/users",
        Role::FleetManager
    ));
    assert!(!api::perm::allowed(
        &axum::http::Method::GET,
        "/api/v1/devices",
        Role::Customer
    ));
    assert!(!api::perm::allowed(
        &axum::http::Method::GET,
        "/api/v1/not-in-table",
        Role::Admin
    ));
}

#[tokio::test]
async fn events_are_acknowledged_once_for_the_whole_tenant() {
    let app = app().await;
    let t = app.tenant("Acme").await;
    app.user(t, "admin@acme.example.com", Role::Admin).await;
    app.user(t, "dispatch@acme.example.com", Role::Dispatcher).await;
    let admin = app.login("admin@acme.example.com").await;
    let disp = app.login("dispatch@acme.example.com").await;
    let s = seed(&app, &admin, t, IMEI_A, VIN_A, MARK).await;
    let dev = s.ids["devices"];
    let q = format!("device_id={dev}&{}", range());

    let all = app.call("GET", &format!("/api/v1/events?{q}"), Some(&disp), None).await;
    let items = all.json["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4, "{}", all.text);
    assert!(
        items
            .iter()
            .all(|e| e["acknowledged"] == false && e["acknowledged_at"].is_null())
    );
    assert_eq!(items[0]["kind"], "refuel");
    assert_eq!(items[0]["id"], s.event.as_str());

    let r = app
        .call("POST", &format!("/api/v1/events/{}/ack", s.event), Some(&disp), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["acknowledged"], true);
    assert_eq!(r.json["acknowledged_by"], "dispatch@acme.example.com");
    assert_eq!(r.json["kind"], "refuel");
    let at = r.json["acknowledged_at"].as_str().unwrap().to_string();
    // Idempotent: the first acknowledgement stands.
    let again = app
        .call("POST", &format!("/api/v1/events/{}/ack", s.event), Some(&admin), None)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json["acknowledged_at"], at.as_str());
    assert_eq!(again.json["acknowledged_by"], "dispatch@acme.example.com");

    // Everyone in the tenant sees it acknowledged; the filter splits the list.
    let acked = app
        .call(
            "GET",
            &format!("/api/v1/events?{q}&acknowledged=true"),
            Some(&admin),
            None,
        )
        .await;
    let acked = acked.json["items"].as_array().unwrap();
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0]["id"], s.event.as_str());
    assert_eq!(acked[0]["acknowledged_by"], "dispatch@acme.example.com");
    let open = app
        .call(
            "GET",
            &format!("/api/v1/events?{q}&acknowledged=false"),
            Some(&admin),
            None,
        )
        .await;
    let open: Vec<&str> = open.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(open, ["fuel_theft", "dtc", "overspeed"]);
    // Newest first, as a feed wants them, with a cursor that keeps going backwards.
    let desc = app
        .call(
            "GET",
            &format!("/api/v1/events?{q}&order=desc&limit=3"),
            Some(&admin),
            None,
        )
        .await;
    let kinds: Vec<&str> = desc.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["overspeed", "dtc", "fuel_theft"]);
    let c = desc.json["next_cursor"].as_str().unwrap();
    let rest = app
        .call(
            "GET",
            &format!("/api/v1/events?{q}&order=desc&cursor={c}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(rest.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest.json["items"][0]["kind"], "refuel");
    let bad = app
        .call("GET", &format!("/api/v1/events?{q}&order=up"), Some(&admin), None)
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Junk ids and ids of events that do not exist are 404s, and record nothing.
    for id in [
        "junk".to_string(),
        "%2E%2E".to_string(),
        api::resources::telemetry::event_id(dev, chrono::Utc::now(), "refuel"),
        api::resources::telemetry::event_id(
            dev + 1000,
            chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
            "refuel",
        ),
    ] {
        let r = app
            .call("POST", &format!("/api/v1/events/{id}/ack"), Some(&admin), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "not_found");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_acks")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    // The maintenance list has what the DTC detector emits as well as plain `dtc` events.
    sqlx::query(
        "INSERT INTO events (device_id, time, kind, severity, attributes) VALUES ($1, $2, 'dtc_raised', 'high', $3)",
    )
    .bind(dev)
    .bind(chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap() + chrono::Duration::hours(1))
    .bind(json!({"code": "P0420"}))
    .execute(app.pool())
    .await
    .unwrap();
    let dtcs = app
        .call("GET", &format!("/api/v1/maintenance/dtcs?{q}"), Some(&admin), None)
        .await;
    let kinds: Vec<&str> = dtcs.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dtc", "dtc_raised"], "{}", dtcs.text);
}

#[tokio::test]
async fn openapi_document_and_mounted_routes_agree() {
    let app = app().await;
    let doc = serde_json::to_value(api::http::openapi()).unwrap();
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut expected: Vec<(String, String)> = TABLE
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .chain(PUBLIC.iter().map(|(m, p)| (m.to_string(), p.to_string())))
        .chain([("GET".to_string(), "/ready".to_string())])
        .collect();
    documented.sort();
    expected.sort();
    assert_eq!(documented, expected, "OpenAPI paths and the permission table differ");
    // Each documented operation is mounted: unauthenticated it is refused (401), never 404/405.
    for (method, path) in &documented {
        let url = path.replace("{id}", "1");
        let r = app.call(method, &url, None, None).await;
        assert!(
            r.status != StatusCode::NOT_FOUND && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not mounted ({})",
            r.status
        );
        if TABLE.iter().any(|(m, p, _)| m == method && p == path) {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
    // The document is served, and so are the offline docs.
    let served = app.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(served.status, StatusCode::OK);
    assert_eq!(
        served.json["paths"].as_object().unwrap().len(),
        doc["paths"].as_object().unwrap().len()
    );
    let page = app.call("GET", "/docs", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("/docs/rapidoc-min.js") && !page.text.contains("https://"));
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let js = app.call("GET", "/docs/rapidoc-min.js", None, None).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.text.len() > 100_000);
    // Nothing else is mounted under the API prefix.
    assert_eq!(
        app.call("GET", "/api/v1/debug", None, None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn ready_reports_its_checks() {
    let app = app().await;
    let r = app.call("GET", "/ready", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["checks"]["store"], "ok");
    assert_eq!(r.json["checks"]["bus"], "ok");
    let state = api::AppState::new(app.pool().clone(), config(), SECRET, None).with_ready_check(
        "broker",
        std::sync::Arc::new(|| Box::pin(async { Err("connection refused".to_string()) })),
    );
    let router = api::router(state);
    use tower::ServiceExt;
    let resp = router
        .oneshot(
            axum::http::Request::get("/ready")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn positions_outside_a_drivers_consented_hours_are_hidden_from_all_but_admins() {
    let app = app().await;
    let (t, tok) = app.tenant_user("Acme", Role::Dispatcher).await;
    let admin_email = "boss@acme.example.com";
    app.user(t, admin_email, Role::Admin).await;
    let admin = app.login(admin_email).await;
    let s = seed(&app, &admin, t, IMEI_A, VIN_A, MARK).await;
    let (dev, veh) = (s.ids["devices"], s.ids["vehicles"]);
    let base = format!("/api/v1/positions/history?vehicle_id={veh}&{}", range());
    let count = |r: &common::Resp| r.json["items"].as_array().map(|a| a.len()).unwrap_or(0);
    assert_eq!(
        count(&app.call("GET", &base, Some(&tok), None).await),
        600,
        "no consent row: all shown"
    );

    // The seeded fixes are on Monday 2026-09-21, 14:13–14:23 UTC. A driver who works
    // 08:00–14:18 UTC on Mondays and did not consent to more.
    let driver: i64 = sqlx::query_scalar("INSERT INTO drivers (tenant_id, name) VALUES ($1, 'D') RETURNING id")
        .bind(t)
        .fetch_one(app.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE devices SET driver_id = $2 WHERE id = $1")
        .bind(dev)
        .bind(driver)
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO driver_consent (driver_id, track_outside_hours, time_zone, working_hours)
         VALUES ($1, false, 'UTC', '{\"mon\": [[\"08:00\", \"14:18\"]]}')",
    )
    .bind(driver)
    .execute(app.pool())
    .await
    .unwrap();
    let shown = count(&app.call("GET", &base, Some(&tok), None).await);
    assert!(shown > 0 && shown < 600, "only the fixes inside working hours: {shown}");
    assert_eq!(
        count(&app.call("GET", &base, Some(&admin), None).await),
        600,
        "admins see everything"
    );
    let latest = app.call("GET", "/api/v1/positions/latest", Some(&tok), None).await;
    assert_eq!(count(&latest), 0, "the latest fix (14:23) is outside working hours");
}

#[tokio::test]
async fn positions_latest_history_and_formats() {
    let app = app().await;
    let (t, tok) = app.tenant_user("Acme", Role::Dispatcher).await;
    let admin_email = "boss@acme.example.com";
    app.user(t, admin_email, Role::Admin).await;
    let admin = app.login(admin_email).await;
    let s = seed(&app, &admin, t, IMEI_A, VIN_A, MARK).await;
    let (dev, veh) = (s.ids["devices"], s.ids["vehicles"]);

    let r = app.call("GET", "/api/v1/positions/latest", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["device_id"], dev);
    assert_eq!(items[0]["vehicle_id"], veh);
    assert_eq!(items[0]["fix_time"], "2026-09-21T14:23:19Z");
    let r = app
        .call(
            "GET",
            &format!("/api/v1/positions/latest?vehicle_id={veh}"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);

    let base = format!("/api/v1/positions/history?vehicle_id={veh}&{}", range());
    let r = app.call("GET", &base, Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 600);
    // Buckets are aligned to the clock: 600 s starting at :20 touch 11 minutes.
    let r = app
        .call("GET", &format!("{base}&downsample_s=60"), Some(&tok), None)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 11);
    let r = app
        .call("GET", &format!("{base}&format=geojson"), Some(&tok), None)
        .await;
    assert_eq!(r.headers["content-type"], "application/geo+json");
    assert_eq!(
        r.json["features"][0]["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .len(),
        600
    );
    let r = app
        .call("GET", &format!("{base}&format=csv&limit=5"), Some(&tok), None)
        .await;
    assert_eq!(r.text.lines().count(), 6);
    assert!(r.text.starts_with("device_id,fix_time,lat,lon"));
    let r = app
        .call("GET", &format!("{base}&format=gpx&downsample_s=300"), Some(&tok), None)
        .await;
    assert_eq!(r.text.matches("<trkpt").count(), 3);
    assert!(r.text.contains("<gpx version=\"1.1\""));

    for bad in [
        format!("/api/v1/positions/history?device_id={dev}"),
        format!("/api/v1/positions/history?device_id={dev}&from=2026-09-22T00:00:00Z&to=2026-09-21T00:00:00Z"),
        format!("/api/v1/positions/history?device_id={dev}&from=2026-01-01T00:00:00Z&to=2026-09-21T00:00:00Z"),
        format!("/api/v1/positions/history?device_id={dev}&vehicle_id={veh}&{}", range()),
        format!("/api/v1/positions/history?device_id={dev}&{}&format=kml", range()),
        format!("/api/v1/positions/history?device_id={dev}&from=yesterday&to=2026-09-21T00:00:00Z"),
    ] {
        let r = app.call("GET", &bad, Some(&tok), None).await;
        assert!(
            r.status == StatusCode::UNPROCESSABLE_ENTITY || r.status == StatusCode::BAD_REQUEST,
            "{bad}: {}",
            r.text
        );
    }
    let r = app
        .call(
            "GET",
            &format!("/api/v1/positions/history?device_id=999999&{}", range()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn operator_outputs_trips_stops_events_scores_fuel_maintenance() {
    let app = app().await;
    let (t, tok) = app.tenant_user("Acme", Role::Admin).await;
    let s = seed(&app, &tok, t, IMEI_A, VIN_A, MARK).await;
    let (dev, veh, drv) = (s.ids["devices"], s.ids["vehicles"], s.ids["drivers"]);
    let q = format!("vehicle_id={veh}&{}", range());

    let r = app.call("GET", &format!("/api/v1/trips?{q}"), Some(&tok), None).await;
    assert_eq!(r.json["items"][0]["distance_m"], 20000.0, "{}", r.text);
    assert_eq!(r.json["items"][0]["vehicle_id"], veh);
    let r = app
        .call("GET", &format!("/api/v1/trips/{}", s.ids["trips"]), Some(&tok), None)
        .await;
    assert_eq!(r.json["device_id"], dev);
    // A second trip makes one stop between them.
    let t1 = chrono::DateTime::from_timestamp(1_790_000_000 + 3600, 0).unwrap();
    store::query::upsert_trip(
        app.pool(),
        &store::query::TripRow {
            device_id: dev,
            start_time: t1,
            end_time: None,
            start_lat: None,
            start_lon: None,
            end_lat: None,
            end_lon: None,
            distance_m: None,
            max_speed_kmh: None,
            avg_speed_kmh: None,
            fuel_used_l: None,
            driver_id: None,
            attributes: json!({}),
        },
    )
    .await
    .unwrap();
    let r = app.call("GET", &format!("/api/v1/stops?{q}"), Some(&tok), None).await;
    let stops = r.json["items"].as_array().unwrap();
    assert_eq!(stops[0]["duration_s"], 1800.0, "{}", r.text);

    let r = app
        .call(
            "GET",
            &format!("/api/v1/events?{q}&kind=overspeed,dtc"),
            Some(&tok),
            None,
        )
        .await;
    let kinds: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dtc", "overspeed"]);
    // Cursor over events.
    let r = app
        .call("GET", &format!("/api/v1/events?{q}&limit=3"), Some(&tok), None)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 3);
    let c = r.json["next_cursor"].as_str().unwrap();
    let r = app
        .call(
            "GET",
            &format!("/api/v1/events?{q}&limit=3&cursor={c}"),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    assert!(r.json.get("next_cursor").is_none());

    let r = app
        .call("GET", &format!("/api/v1/maintenance/dtcs?{q}"), Some(&tok), None)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    let r = app.call("GET", &format!("/api/v1/fuel?{q}"), Some(&tok), None).await;
    assert_eq!(r.json["refuelled_l"], 40.0, "{}", r.text);
    assert_eq!(r.json["drained_l"], 12.0);
    assert_eq!(r.json["consumption_l_per_100km"], 8.0);
    let r = app
        .call(
            "GET",
            &format!("/api/v1/scores?subject_kind=driver&subject_id={drv}&{}", range()),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(r.json["items"][0]["score"], 87.5, "{}", r.text);
    let r = app.call("GET", "/api/v1/scores?period=week", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Odometer at the last fix is 12 000 km + 5.99 km; the plan is every 15 000 km from 0.
    let r = app.call("GET", "/api/v1/maintenance/due", Some(&tok), None).await;
    let item = &r.json["items"][0];
    assert!(
        (item["odometer_km"].as_f64().unwrap() - 12_005.99).abs() < 0.01,
        "{}",
        r.text
    );
    assert!((item["remaining_km"].as_f64().unwrap() - 2_994.01).abs() < 0.01);
    assert_eq!(item["due"], false);
    let plan = s.ids["service-plans"];
    let r = app
        .call(
            "PATCH",
            &format!("/api/v1/service-plans/{plan}"),
            Some(&tok),
            Some(json!({"every_km": 10000.0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.call("GET", "/api/v1/maintenance/due", Some(&tok), None).await;
    assert_eq!(r.json["items"][0]["due"], true);
    let r = app
        .call(
            "POST",
            "/api/v1/service-plans",
            Some(&tok),
            Some(json!({"vehicle_id": veh, "name": "nothing"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn fleet_crud_geofences_commands_assignments() {
    let app = app().await;
    let (_, tok) = app.tenant_user("Acme", Role::Admin).await;
    // Devices: register, duplicate, bad protocol, patch, MQTT credentials, delete.
    let d = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&tok),
            Some(json!({"identifier": IMEI_A, "protocol": "GT06"})),
        )
        .await;
    assert_eq!(d.status, StatusCode::CREATED, "{}", d.text);
    assert_eq!(d.json["protocol"], "gt06");
    let id = d.json["id"].as_i64().unwrap();
    let dup = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&tok),
            Some(json!({"identifier": IMEI_A, "protocol": "gt06"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&tok),
            Some(json!({"identifier": "x y", "protocol": "gt06"})),
        )
        .await;
    assert!(bad.json["error"]["details"]["fields"]["identifier"].is_string());
    let bad = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&tok),
            Some(json!({"identifier": "123", "protocol": "nope"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call("GET", &format!("/api/v1/devices?identifier={IMEI_A}"), Some(&tok), None)
        .await;
    assert_eq!(r.json["items"][0]["id"], id);
    let v = app
        .call(
            "POST",
            "/api/v1/vehicles",
            Some(&tok),
            Some(json!({"name": "van", "vin": VIN_A, "year": 2020})),
        )
        .await;
    let vid = v.json["id"].as_i64().unwrap();
    assert_eq!(v.json["fuel_tank_l"], Value::Null);
    // The tank size the fuel operators turn a level in % into litres with.
    let p = app
        .call(
            "PATCH",
            &format!("/api/v1/vehicles/{vid}"),
            Some(&tok),
            Some(json!({"fuel_tank_l": 80.0})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(p.json["fuel_tank_l"], 80.0);
    assert_eq!(p.json["year"], 2020);
    let g = app
        .call("GET", &format!("/api/v1/vehicles/{vid}"), Some(&tok), None)
        .await;
    assert_eq!(g.json["fuel_tank_l"], 80.0);
    let bad = app
        .call(
            "PATCH",
            &format!("/api/v1/vehicles/{vid}"),
            Some(&tok),
            Some(json!({"fuel_tank_l": -5})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.json["error"]["details"]["fields"]["fuel_tank_l"].is_string(),
        "{}",
        bad.text
    );
    assert_eq!(
        app.call(
            "POST",
            "/api/v1/vehicles",
            Some(&tok),
            Some(json!({"name": "van2", "vin": VIN_A}))
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.call(
            "POST",
            "/api/v1/vehicles",
            Some(&tok),
            Some(json!({"name": "van2", "vin": "short"}))
        )
        .await
        .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let p = app
        .call(
            "PATCH",
            &format!("/api/v1/devices/{id}"),
            Some(&tok),
            Some(json!({"vehicle_id": vid})),
        )
        .await;
    assert_eq!(p.json["vehicle_id"], vid);
    let p = app
        .call(
            "PATCH",
            &format!("/api/v1/devices/{id}"),
            Some(&tok),
            Some(json!({"vehicle_id": null})),
        )
        .await;
    assert_eq!(p.json["vehicle_id"], Value::Null);
    let p = app
        .call(
            "PATCH",
            &format!("/api/v1/devices/{id}"),
            Some(&tok),
            Some(json!({"vehicle_id": 987654})),
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Commands.
    let c = app
        .call(
            "POST",
            &format!("/api/v1/devices/{id}/commands"),
            Some(&tok),
            Some(json!({"command": {"type": "set_interval", "seconds": 30}})),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.text);
    assert_eq!(c.json["status"], "queued");
    let cid = c.json["id"].as_i64().unwrap();
    sqlx::query("UPDATE device_commands SET status = 'answered', response = 'OK' WHERE id = $1")
        .bind(cid)
        .execute(app.pool())
        .await
        .unwrap();
    let r = app
        .call("GET", &format!("/api/v1/commands/{cid}"), Some(&tok), None)
        .await;
    assert_eq!(r.json["status"], "answered");
    assert_eq!(r.json["response"], "OK");
    let bad = app
        .call(
            "POST",
            &format!("/api/v1/devices/{id}/commands"),
            Some(&tok),
            Some(json!({"command": {"type": "self_destruct"}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Geofences: validated by the geofence crate.
    let circle = json!({"name": "yard", "geojson": {"type": "Feature", "geometry": {"type": "Point", "coordinates": [13.4, 52.5]},
        "properties": {"radius_m": 150}}, "attributes": {"rules": {"enter_dwell_s": 30}}});
    let g = app.call("POST", "/api/v1/geofences", Some(&tok), Some(circle)).await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.text);
    let gid = g.json["id"].as_i64().unwrap();
    for bad in [
        json!({"name": "x", "geojson": {"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.0]]]}}),
        json!({"name": "x", "geojson": {"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.1, 52.1], [13.1, 52.0], [13.0, 52.1], [13.0, 52.0]]]}}),
        json!({"name": "x", "geojson": {"coordinates": []}}),
        json!({"name": "x", "geojson": {"type": "Point", "coordinates": [13.4, 52.5]}, "attributes": {"rules": {"typo": 1}}}),
        json!({"name": "x", "geojson": {"type": "Polygon", "coordinates": [[[13.0, 95.0], [13.1, 52.0], [13.1, 52.1], [13.0, 95.0]]]}}),
    ] {
        let r = app
            .call("POST", "/api/v1/geofences", Some(&tok), Some(bad.clone()))
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.text);
    }
    let r = app
        .call(
            "PATCH",
            &format!("/api/v1/geofences/{gid}"),
            Some(&tok),
            Some(json!({"name": "big yard"})),
        )
        .await;
    assert_eq!(r.json["name"], "big yard");
    assert!(r.json["updated_at"].as_str().unwrap() >= g.json["updated_at"].as_str().unwrap());

    // Drivers and assignments over time.
    let drv = app
        .call(
            "POST",
            "/api/v1/drivers",
            Some(&tok),
            Some(json!({"name": "Ann", "external_id": "card-1"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let v2 = app
        .call("POST", "/api/v1/vehicles", Some(&tok), Some(json!({"name": "truck"})))
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    for (veh, start) in [(vid, "2026-09-01T06:00:00Z"), (v2, "2026-09-02T06:00:00Z")] {
        let r = app
            .call(
                "POST",
                &format!("/api/v1/drivers/{drv}/assignments"),
                Some(&tok),
                Some(json!({"vehicle_id": veh, "start_time": start})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = app
        .call("GET", &format!("/api/v1/drivers/{drv}/assignments"), Some(&tok), None)
        .await;
    let a = r.json["items"].as_array().unwrap();
    assert_eq!(
        a[0]["end_time"], "2026-09-02T06:00:00Z",
        "the first assignment ends when the next starts"
    );
    assert_eq!(a[1]["end_time"], Value::Null);

    // Groups.
    let g = app
        .call(
            "POST",
            "/api/v1/groups",
            Some(&tok),
            Some(json!({"name": "north", "vehicle_ids": [vid, v2]})),
        )
        .await;
    assert_eq!(g.json["vehicle_ids"], json!([vid, v2]));
    let r = app
        .call(
            "GET",
            &format!("/api/v1/vehicles?group_id={}", g.json["id"]),
            Some(&tok),
            None,
        )
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 2);

    // Delete a device; its id is gone.
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/devices/{id}"), Some(&tok), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call("GET", &format!("/api/v1/devices/{id}"), Some(&tok), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/devices/{id}"), Some(&tok), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // An admin looks up an unregistered device by its identifier; nobody lists them all
    // (they belong to no tenant: other customers' IMEIs and addresses).
    sqlx::query(
        "INSERT INTO unknown_devices (protocol, identifier, attempts) VALUES ('gt06', '999', 3), ('gt06', '555', 9)",
    )
    .execute(app.pool())
    .await
    .unwrap();
    let r = app.call("GET", "/api/v1/unknown-devices", Some(&tok), None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.json);
    assert!(
        r.json["error"]["details"]["fields"]["identifier"].is_string(),
        "{}",
        r.json
    );
    let r = app
        .call("GET", "/api/v1/unknown-devices?identifier=999", Some(&tok), None)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1, "{}", r.json);
    assert_eq!(r.json["items"][0]["attempts"], 3);
    // Registering it takes it off the list.
    app.call(
        "POST",
        "/api/v1/devices",
        Some(&tok),
        Some(json!({"identifier": "999", "protocol": "gt06"})),
    )
    .await;
    let r = app
        .call("GET", "/api/v1/unknown-devices?identifier=999", Some(&tok), None)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn websocket_gets_own_positions_within_100ms_and_not_others() {
    use futures_util::StreamExt;
    let app = app().await;
    let (ta, a) = app.tenant_user("Alpha", Role::FleetManager).await;
    let (tb, b) = app.tenant_user("Beta", Role::Admin).await;
    let dev_a = ingest::registry::add_device(app.pool(), "Alpha", IMEI_A, protocols::Protocol::Teltonika)
        .await
        .unwrap();
    let dev_b = ingest::registry::add_device(app.pool(), "Beta", "861234567890123", protocols::Protocol::Gt06)
        .await
        .unwrap();
    let _ = (ta, tb, b);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    let url = format!("ws://{addr}/api/v1/stream?access_token={a}&kinds=positions");
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    // Without credentials: refused before the upgrade.
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/stream")).await;
    assert!(err.is_err());

    // Warm the path once (first-connection costs are not what is measured).
    app.publish(ingest::DeviceBatch {
        device_id: dev_a,
        positions: vec![pos(dev_a, 0, 52.0, 13.0)],
        events: vec![],
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();

    let mut worst = Duration::ZERO;
    for i in 1..=5 {
        // Tenant B's fix first: it must never reach A's stream.
        app.publish(ingest::DeviceBatch {
            device_id: dev_b,
            positions: vec![pos(dev_b, i, 10.0, 10.0)],
            events: vec![],
        })
        .await;
        let start = Instant::now();
        app.publish(ingest::DeviceBatch {
            device_id: dev_a,
            positions: vec![pos(dev_a, i, 52.0 + i as f64 * 0.001, 13.0)],
            events: vec![],
        })
        .await;
        let msg = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let elapsed = start.elapsed();
        worst = worst.max(elapsed);
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(v["type"], "position");
        assert_eq!(v["data"]["device_id"], dev_a, "only A's devices: {v}");
    }
    assert!(
        worst < Duration::from_millis(100),
        "slowest delivery {worst:?} (publish → durable → client)"
    );
    server.abort();
}

#[tokio::test]
async fn slow_websocket_client_is_dropped_and_ingest_is_not_slowed() {
    use futures_util::StreamExt;
    let db_app = app().await;
    let (_, a) = db_app.tenant_user("Alpha", Role::Admin).await;
    let dev = ingest::registry::add_device(db_app.pool(), "Alpha", IMEI_A, protocols::Protocol::Teltonika)
        .await
        .unwrap();
    // A bus with a tiny subscriber buffer so that "falling behind" happens quickly.
    let writer = store::Writer::spawn(db_app.pool().clone(), store::WriterConfig::default());
    let bus = std::sync::Arc::new(stream::InProcessBus::new(
        &stream::BusConfig {
            subscriber_capacity: 8,
            ..Default::default()
        },
        std::sync::Arc::new(ingest::StoreSink::new(writer)),
    ));
    let state = api::AppState::new(
        db_app.pool().clone(),
        config(),
        SECRET,
        Some(bus.clone() as api::DeviceBus),
    );
    let router = api::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/stream?access_token={a}"))
        .await
        .unwrap();
    // The client never reads while a burst is published: publishing must not wait for it.
    let start = Instant::now();
    let mut receipts = Vec::new();
    // ~30k fixes as ~13 MB of JSON: more than the socket buffers hold.
    for i in 0..300 {
        use stream::Bus;
        receipts.push(
            bus.publish(ingest::DeviceBatch {
                device_id: dev,
                positions: (0..100).map(|j| pos(dev, i * 100 + j, 52.0, 13.0)).collect(),
                events: vec![],
            })
            .await
            .unwrap(),
        );
    }
    for r in receipts {
        r.await.unwrap();
    }
    let publish_time = start.elapsed();
    assert!(publish_time < Duration::from_secs(30), "{publish_time:?}");
    // Now read: some messages, then a close frame saying why.
    let mut close_reason = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))))) => {
                close_reason = Some(f.reason.to_string());
                break;
            }
            Ok(Some(Ok(_))) => continue,
            _ => break,
        }
    }
    let reason = close_reason.expect("a slow client is closed with a reason");
    assert!(reason.contains("too slow"), "{reason}");
    server.abort();
}
