//! Services through the HTTP API (issue 9, item 5): partners, matching, bookings,
//! recommendations, payments, refunds, invoices, wallets, payouts and the gateway
//! webhook — against a real PostgreSQL, through the real router.

mod common;

use api::auth::Role;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Timelike, Utc};
use common::*;
use futures_util::future::join_all;
use serde_json::{Value, json};

/// A tenant with an admin, an active partner it operates (near Berlin, one `diagnostics`
/// service at 120.00 EUR for 60 minutes), and a vehicle whose device reported nearby.
struct Market {
    tenant: i64,
    admin: String,
    partner: i64,
    service_id: i64,
    vehicle: i64,
    device: i64,
}

/// Tomorrow at `hour`:00 UTC: in the future, on the 15-minute grid.
fn tomorrow(hour: u32) -> DateTime<Utc> {
    (Utc::now() + Duration::days(1))
        .with_hour(hour)
        .unwrap()
        .with_minute(0)
        .unwrap()
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap()
}

async fn post_ok(app: &App, tok: &str, path: &str, body: Value) -> Value {
    let r = app.call("POST", path, Some(tok), Some(body)).await;
    assert!(r.status.is_success(), "POST {path}: {} {}", r.status, r.text);
    r.json
}

async fn partner(app: &App, admin: &str, name: &str, lat: f64, lon: f64, capacity: i32, price: i64) -> (i64, i64) {
    let p = post_ok(
        app,
        admin,
        "/api/v1/partners",
        json!({"name": name, "kind": "repair_center", "lat": lat, "lon": lon, "capacity": capacity,
               "commission_bp": 1500, "currency": "EUR"}),
    )
    .await;
    let id = p["id"].as_i64().unwrap();
    assert_eq!(p["status"], "applied");
    for to in ["documents_submitted", "approved", "active"] {
        let r = post_ok(
            app,
            admin,
            &format!("/api/v1/partners/{id}/transitions"),
            json!({"to": to, "reason": "checked"}),
        )
        .await;
        assert_eq!(r["status"], to);
    }
    let s = post_ok(
        app,
        admin,
        &format!("/api/v1/partners/{id}/services"),
        json!({"service": "diagnostics", "price_minor": price, "duration_min": 60}),
    )
    .await;
    (id, s["id"].as_i64().unwrap())
}

async fn vehicle(app: &App, tok: &str, mark: &str, imei: &str, lat: f64, lon: f64) -> (i64, i64) {
    let v = post_ok(app, tok, "/api/v1/vehicles", json!({"name": format!("{mark} van")})).await;
    let v = v["id"].as_i64().unwrap();
    let d = post_ok(
        app,
        tok,
        "/api/v1/devices",
        json!({"identifier": imei, "protocol": "teltonika", "vehicle_id": v}),
    )
    .await;
    let d = d["id"].as_i64().unwrap();
    app.publish(ingest::DeviceBatch {
        device_id: d,
        positions: vec![pos(d, 0, lat, lon)],
        events: vec![],
    })
    .await;
    (v, d)
}

async fn market(app: &App, tenant: &str, imei: &str, capacity: i32) -> Market {
    let (t, admin) = app.tenant_user(tenant, Role::Admin).await;
    let (partner, service_id) = partner(app, &admin, &format!("{tenant} Garage"), 52.53, 13.41, capacity, 12_000).await;
    let (vehicle, device) = vehicle(app, &admin, tenant, imei, 52.52, 13.40).await;
    Market {
        tenant: t,
        admin,
        partner,
        service_id,
        vehicle,
        device,
    }
}

async fn user_in(app: &App, tenant: i64, email: &str, role: Role) -> (i64, String) {
    let id = app.user(tenant, email, role).await;
    (id, app.login(email).await)
}

#[tokio::test]
async fn partners_onboarding_catalogue_hours_inventory_and_visibility() {
    let app = app().await;
    let (ta, a) = app.tenant_user("Alpha", Role::Admin).await;
    let (_tb, b) = app.tenant_user("Beta", Role::Admin).await;
    let r = app
        .call(
            "POST",
            "/api/v1/partners",
            Some(&a),
            Some(json!({"name": "Alpha Tyres", "kind": "tyre_shop", "lat": 52.0, "lon": 13.0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/partners",
            Some(&a),
            Some(json!({"name": "Alpha Tyres", "kind": "parts_shop", "lat": 52.0, "lon": 13.0, "tenant_id": 99})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused: {}",
        r.text
    );
    let p = post_ok(
        &app,
        &a,
        "/api/v1/partners",
        json!({"name": "Alpha Tyres", "kind": "parts_shop", "lat": 52.0, "lon": 13.0, "capacity": 2}),
    )
    .await;
    let id = p["id"].as_i64().unwrap();
    assert_eq!(p["commission_bp"], 1000);
    let url = format!("/api/v1/partners/{id}");

    // Before approval another tenant's admin cannot tell it exists.
    for (m, u, body) in [
        ("GET", url.clone(), None),
        ("PATCH", url.clone(), Some(json!({"name": "hijacked"}))),
        (
            "POST",
            format!("{url}/transitions"),
            Some(json!({"to": "documents_submitted"})),
        ),
        ("GET", format!("{url}/services"), None),
    ] {
        let r = app.call(m, &u, Some(&b), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {u}: {}", r.text);
    }
    let list = app.call("GET", "/api/v1/partners", Some(&b), None).await;
    assert!(!list.text.contains("Alpha Tyres"));

    // The workflow: a skipped step is a 409, an unknown status a 422, each step audited.
    let r = app
        .call(
            "POST",
            &format!("{url}/transitions"),
            Some(&a),
            Some(json!({"to": "active"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "conflict");
    let r = app
        .call(
            "POST",
            &format!("{url}/transitions"),
            Some(&a),
            Some(json!({"to": "closed"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    for to in [
        "documents_submitted",
        "rejected",
        "documents_submitted",
        "approved",
        "active",
    ] {
        post_ok(
            &app,
            &a,
            &format!("{url}/transitions"),
            json!({"to": to, "reason": "review"}),
        )
        .await;
    }
    let audit = app.call("GET", &format!("{url}/transitions"), Some(&a), None).await;
    let steps: Vec<&str> = audit.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["to_status"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "applied",
            "documents_submitted",
            "rejected",
            "documents_submitted",
            "approved",
            "active"
        ]
    );
    assert!(audit.json["items"][1]["actor"].as_str().unwrap().starts_with("user:"));

    // Active: the marketplace sees it, without the agreement; still cannot manage it.
    let seen = app.call("GET", &url, Some(&b), None).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.json.get("commission_bp").is_none(), "{}", seen.text);
    assert!(seen.headers.contains_key("etag"));
    let r = app
        .call("PATCH", &url, Some(&b), Some(json!({"commission_bp": 0})))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            "PATCH",
            &url,
            Some(&a),
            Some(json!({"commission_bp": 1200, "name": "Alpha Tyres & Parts"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["commission_bp"], 1200);
    // An active partner cannot be deleted (suspend it); a fresh one can.
    assert_eq!(
        app.call("DELETE", &url, Some(&a), None).await.status,
        StatusCode::CONFLICT
    );
    let tmp = post_ok(
        &app,
        &a,
        "/api/v1/partners",
        json!({"name": "Typo", "kind": "both", "lat": 1.0, "lon": 1.0}),
    )
    .await;
    let tmp_url = format!("/api/v1/partners/{}", tmp["id"]);
    assert_eq!(
        app.call("DELETE", &tmp_url, Some(&b), None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call("DELETE", &tmp_url, Some(&a), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call("GET", &tmp_url, Some(&a), None).await.status,
        StatusCode::NOT_FOUND
    );

    // Catalogue and hours.
    let r = app
        .call(
            "POST",
            &format!("{url}/services"),
            Some(&a),
            Some(json!({"service": "Oil Change", "price_minor": 5000, "duration_min": 30})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            "POST",
            &format!("{url}/services"),
            Some(&a),
            Some(json!({"service": "oil_change", "price_minor": 5000, "duration_min": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    post_ok(
        &app,
        &a,
        &format!("{url}/services"),
        json!({"service": "oil_change", "price_minor": 5000, "duration_min": 30}),
    )
    .await;
    let cat = app.call("GET", &format!("{url}/services"), Some(&b), None).await;
    assert_eq!(cat.json["items"][0]["price_minor"], 5000);
    assert_eq!(cat.json["items"][0]["currency"], "EUR");
    let hours = json!({"time_zone": "Europe/Berlin", "capacity": 3,
                       "opening_hours": {"mon": [["08:00", "17:00"]], "sat": [["09:00", "12:00"]]}});
    let r = app
        .call("PUT", &format!("{url}/hours"), Some(&a), Some(hours.clone()))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for bad in [
        json!({"time_zone": "Mars/Olympus", "capacity": 1, "opening_hours": {}}),
        json!({"time_zone": "UTC", "capacity": 1, "opening_hours": {"mon": [["17:00", "08:00"]]}}),
        json!({"time_zone": "UTC", "capacity": 0, "opening_hours": {}}),
    ] {
        let r = app.call("PUT", &format!("{url}/hours"), Some(&a), Some(bad)).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    }
    let r = app.call("GET", &format!("{url}/hours"), Some(&b), None).await;
    assert_eq!(r.json, hours);
    let r = app.call("PUT", &format!("{url}/hours"), Some(&b), Some(hours)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "only the operator keeps the hours");

    // Inventory: reservations never exceed stock; a reservation ends once.
    post_ok(
        &app,
        &a,
        &format!("{url}/parts"),
        json!({"sku": "PAD-1", "name": "brake pads", "price_minor": 4000, "stock": 3}),
    )
    .await;
    let res = post_ok(
        &app,
        &a,
        &format!("{url}/reservations"),
        json!({"sku": "PAD-1", "quantity": 2}),
    )
    .await;
    let r = app
        .call(
            "POST",
            &format!("{url}/reservations"),
            Some(&a),
            Some(json!({"sku": "PAD-1", "quantity": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = app
        .call(
            "POST",
            &format!("{url}/reservations"),
            Some(&a),
            Some(json!({"sku": "NOPE", "quantity": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app
        .call(
            "POST",
            &format!("{url}/parts"),
            Some(&a),
            Some(json!({"sku": "PAD-1", "name": "brake pads", "price_minor": 4000, "stock": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "stock below reserved: {}", r.text);
    let fin = format!("/api/v1/reservations/{}/finish", res["id"]);
    assert_eq!(
        app.call("POST", &fin, Some(&b), Some(json!({"consume": true})))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = post_ok(&app, &a, &fin, json!({"consume": true})).await;
    assert_eq!(r["status"], "consumed");
    assert_eq!(
        app.call("POST", &fin, Some(&a), Some(json!({"consume": false})))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let parts = app.call("GET", &format!("{url}/parts"), Some(&a), None).await;
    assert_eq!(parts.json["items"][0]["stock"], 1);
    assert_eq!(parts.json["items"][0]["available"], 1);
    assert_eq!(
        app.call("GET", &format!("{url}/parts"), Some(&b), None).await.status,
        StatusCode::NOT_FOUND
    );

    // A partner user acts for its own partner only.
    let (pu, ptok) = user_in(&app, ta, "staff@alpha-tyres.example.com", Role::Partner).await;
    let (fm, _) = user_in(&app, ta, "fm@alpha.example.com", Role::FleetManager).await;
    let r = app
        .call(
            "POST",
            &format!("{url}/members"),
            Some(&a),
            Some(json!({"user_id": fm})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "only partner-role users: {}",
        r.text
    );
    let r = app
        .call(
            "POST",
            &format!("{url}/members"),
            Some(&b),
            Some(json!({"user_id": pu})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    post_ok(&app, &a, &format!("{url}/members"), json!({"user_id": pu})).await;
    let r = app.call("GET", &format!("{url}/parts"), Some(&ptok), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app.call("GET", &url, Some(&ptok), None).await;
    assert_eq!(r.json["commission_bp"], 1200, "the partner sees its own agreement");

    // Ratings only from completed bookings is covered in the end-to-end test; an unknown
    // booking is refused here.
    let r = app
        .call(
            "POST",
            &format!("{url}/ratings"),
            Some(&a),
            Some(json!({"booking_id": 424242, "stars": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app.call("GET", &format!("{url}/ratings"), Some(&b), None).await;
    assert_eq!(r.json["count"], 0);
}

#[tokio::test]
async fn matching_slots_bookings_bulk_and_transitions() {
    let app = app().await;
    let m = market(&app, "Fleet", "356307042441013", 2).await;
    // A farther, cheaper shop and one that is not active.
    let (far, _) = partner(&app, &m.admin, "Far Garage", 52.60, 13.50, 1, 9_000).await;
    let idle = post_ok(
        &app,
        &m.admin,
        "/api/v1/partners",
        json!({"name": "Idle Garage", "kind": "repair_center", "lat": 52.521, "lon": 13.401}),
    )
    .await;
    let (from, to) = (tomorrow(8), tomorrow(8) + Duration::days(1));
    let q = |v: i64| {
        format!(
            "/api/v1/partners/match?vehicle_id={v}&service=diagnostics&from={}&to={}",
            from.to_rfc3339().replace('+', "%2B"),
            to.to_rfc3339().replace('+', "%2B")
        )
    };
    let r = app.call("GET", &q(m.vehicle), Some(&m.admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", r.text);
    let first = &items[0];
    assert_eq!(first["partner_id"], m.partner);
    assert_eq!(first["partner_name"], "Fleet Garage");
    assert_eq!(first["service_id"], m.service_id);
    assert_eq!(first["service_name"], "diagnostics");
    assert_eq!(first["price_minor"], 12_000);
    assert_eq!(first["currency"], "EUR");
    assert!(first["distance_m"].as_f64().unwrap() > 1000.0 && first["distance_m"].as_f64().unwrap() < 2000.0);
    assert_eq!(
        first["earliest_slot"].as_str().unwrap(),
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert!(first["rating"].is_number());
    assert_eq!(items[1]["partner_id"], far);
    assert!(!r.text.contains(&format!("\"partner_id\":{}", idle["id"])));
    // Another tenant's vehicle does not exist; a vehicle without a position is a 422.
    let (_, other) = app.tenant_user("Other", Role::FleetManager).await;
    assert_eq!(
        app.call("GET", &q(m.vehicle), Some(&other), None).await.status,
        StatusCode::NOT_FOUND
    );
    let bare = post_ok(&app, &m.admin, "/api/v1/vehicles", json!({"name": "no tracker"})).await;
    let r = app
        .call("GET", &q(bare["id"].as_i64().unwrap()), Some(&m.admin), None)
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // Slots: two bays, 60-minute service.
    let slots_url = |p: i64, s: i64| {
        format!(
            "/api/v1/partners/{p}/slots?service_id={s}&from={}&to={}",
            from.to_rfc3339().replace('+', "%2B"),
            (from + Duration::hours(2)).to_rfc3339().replace('+', "%2B")
        )
    };
    let s = app
        .call("GET", &slots_url(m.partner, m.service_id), Some(&m.admin), None)
        .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    assert_eq!(s.json["items"].as_array().unwrap().len(), 5); // 08:00 .. 09:00 every 15 min
    assert_eq!(s.json["items"][0]["free_bays"], 2);

    // Book: the same start twice fills both bays; a third is a 409.
    let book = |v: i64, start: DateTime<Utc>| json!({"vehicle_id": v, "partner_id": m.partner, "service_id": m.service_id, "start": start});
    let b1 = post_ok(&app, &m.admin, "/api/v1/bookings", book(m.vehicle, from)).await;
    assert_eq!(b1["status"], "requested");
    assert_eq!(b1["price_minor"], 12_000);
    assert_eq!(
        b1["end"].as_str().unwrap(),
        (from + Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    post_ok(
        &app,
        &m.admin,
        "/api/v1/bookings",
        book(m.vehicle, from + Duration::minutes(30)),
    )
    .await;
    let r = app
        .call(
            "POST",
            "/api/v1/bookings",
            Some(&m.admin),
            Some(book(m.vehicle, from + Duration::minutes(15))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let s = app
        .call("GET", &slots_url(m.partner, m.service_id), Some(&m.admin), None)
        .await;
    let starts: Vec<&str> = s.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["start"].as_str().unwrap())
        .collect();
    assert!(
        !starts.contains(&from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).as_str()),
        "{starts:?}"
    );
    // Bad input.
    let r = app
        .call(
            "POST",
            "/api/v1/bookings",
            Some(&m.admin),
            Some(json!({"vehicle_id": m.vehicle, "partner_id": 999_999, "service": "diagnostics", "start": from})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "unknown partner: {}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/bookings",
            Some(&m.admin),
            Some(json!({"vehicle_id": m.vehicle, "partner_id": idle["id"], "service": "diagnostics", "start": from})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "inactive partner of the caller's own tenant is not bookable: {}",
        r.text
    );
    let r = app
        .call(
            "POST",
            "/api/v1/bookings",
            Some(&m.admin),
            Some(json!({"vehicle_id": m.vehicle, "partner_id": m.partner, "service": "tyres", "start": from})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/bookings",
            Some(&m.admin),
            Some(book(m.vehicle, Utc::now() - Duration::days(1))),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "past start: {}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/bookings",
            Some(&other),
            Some(book(m.vehicle, from + Duration::hours(5))),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "another tenant's vehicle: {}",
        r.text
    );

    // Bulk: per-item results; a foreign vehicle refuses the whole request first.
    let mut vs = Vec::new();
    for (i, imei) in ["861234567890001", "861234567890002", "861234567890003"]
        .iter()
        .enumerate()
    {
        vs.push(vehicle(&app, &m.admin, &format!("bulk{i}"), imei, 52.52, 13.40).await.0);
    }
    let at = from + Duration::hours(4);
    let bulk = json!({"partner_id": m.partner, "service_id": m.service_id,
        "items": vs.iter().map(|v| json!({"vehicle_id": v, "start": at})).collect::<Vec<_>>()});
    let r = post_ok(&app, &m.admin, "/api/v1/bookings/bulk", bulk).await;
    assert_eq!(r["created"], 2, "{r}");
    assert_eq!(r["failed"], 1);
    assert_eq!(r["results"][2]["status"], 409);
    assert_eq!(r["results"][2]["error"]["code"], "conflict");
    let r = app
        .call("POST", "/api/v1/bookings/bulk", Some(&other), Some(json!({"partner_id": m.partner, "service_id": m.service_id, "items": [{"vehicle_id": vs[0], "start": at + Duration::hours(1)}]})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 4, "nothing was booked by the refused requests");

    // Transitions: fleet roles may only cancel; the partner's users move it forward.
    let id = b1["id"].as_i64().unwrap();
    let tr = format!("/api/v1/bookings/{id}/transitions");
    let (_, disp) = user_in(&app, m.tenant, "disp@fleet.example.com", Role::Dispatcher).await;
    let r = app
        .call("POST", &tr, Some(&disp), Some(json!({"to": "confirmed"})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = app
        .call("POST", &tr, Some(&m.admin), Some(json!({"to": "completed"})))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "requested cannot complete: {}", r.text);
    let r = app
        .call("POST", &tr, Some(&m.admin), Some(json!({"to": "teleported"})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (pu, ptok) = user_in(&app, m.tenant, "staff@garage.example.com", Role::Partner).await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/bookings/{id}"), Some(&ptok), None)
            .await
            .status,
        StatusCode::NOT_FOUND,
        "unlinked partner user sees nothing"
    );
    post_ok(
        &app,
        &m.admin,
        &format!("/api/v1/partners/{}/members", m.partner),
        json!({"user_id": pu}),
    )
    .await;
    let mine = app.call("GET", "/api/v1/bookings", Some(&ptok), None).await;
    assert_eq!(mine.json["items"].as_array().unwrap().len(), 4);
    let (pu2, ptok2) = user_in(&app, m.tenant, "staff@far.example.com", Role::Partner).await;
    post_ok(
        &app,
        &m.admin,
        &format!("/api/v1/partners/{far}/members"),
        json!({"user_id": pu2}),
    )
    .await;
    assert_eq!(
        app.call("POST", &tr, Some(&ptok2), Some(json!({"to": "confirmed"})))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(
        app.call("GET", "/api/v1/bookings", Some(&ptok2), None).await.json["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = post_ok(&app, &ptok, &tr, json!({"to": "confirmed"})).await;
    assert_eq!(r["status"], "confirmed");
    let r = app
        .call("POST", &tr, Some(&ptok), Some(json!({"to": "confirmed"})))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "confirm once");
    let r = post_ok(&app, &disp, &tr, json!({"to": "cancelled"})).await;
    assert_eq!(r["status"], "cancelled");
    // The cancelled slot is free again.
    post_ok(
        &app,
        &m.admin,
        "/api/v1/bookings",
        book(m.vehicle, from + Duration::minutes(15)),
    )
    .await;

    // Lists filter and page.
    let r = app
        .call("GET", "/api/v1/bookings?status=cancelled", Some(&m.admin), None)
        .await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    let r = app.call("GET", "/api/v1/bookings?limit=2", Some(&m.admin), None).await;
    let next = r.json["next_cursor"].as_str().unwrap().to_string();
    let r2 = app
        .call(
            "GET",
            &format!("/api/v1/bookings?limit=2&cursor={next}"),
            Some(&m.admin),
            None,
        )
        .await;
    assert_eq!(r2.json["items"].as_array().unwrap().len(), 2);
    assert_ne!(r.json["items"][0]["id"], r2.json["items"][0]["id"]);
    let r = app.call("GET", "/api/v1/bookings", Some(&other), None).await;
    assert!(r.json["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn fifty_parallel_requests_for_one_slot_book_it_once() {
    let app = app().await;
    let m = market(&app, "Race", "356307042441099", 1).await;
    let start = tomorrow(9);
    let body = json!({"vehicle_id": m.vehicle, "partner_id": m.partner, "service_id": m.service_id, "start": start});
    let rs = join_all((0..50).map(|_| app.call("POST", "/api/v1/bookings", Some(&m.admin), Some(body.clone())))).await;
    let ok = rs.iter().filter(|r| r.status == StatusCode::CREATED).count();
    let conflicts = rs.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
    assert_eq!(
        (ok, conflicts),
        (1, 49),
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // With two bays and one Idempotency-Key, racing retries still book once.
    let m2 = market(&app, "Retry", "356307042441098", 2).await;
    let body = json!({"vehicle_id": m2.vehicle, "partner_id": m2.partner, "service_id": m2.service_id, "start": start});
    let rs = join_all((0..10).map(|_| {
        app.call_with(
            "POST",
            "/api/v1/bookings",
            Some(&m2.admin),
            Some(body.clone()),
            &[("idempotency-key", "bk-1")],
        )
    }))
    .await;
    assert!(
        rs.iter()
            .all(|r| r.status == StatusCode::CREATED && r.json["id"] == rs[0].json["id"]),
        "{:?}",
        rs.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings WHERE partner_id = $1")
        .bind(m2.partner)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// Vehicle with a DTC event → recommendation listed with the matched shop → accept →
/// booking → confirmed → in progress → completed → payment captured → commission
/// settled → payout; the ledger shows both and still balances; rating once.
#[tokio::test]
async fn end_to_end_dtc_to_payout_over_http() {
    let app = app().await;
    let m = market(&app, "Fleet", "356307042441013", 1).await;
    let (pu, partner_tok) = user_in(&app, m.tenant, "staff@fleet-garage.example.com", Role::Partner).await;
    post_ok(
        &app,
        &m.admin,
        &format!("/api/v1/partners/{}/members", m.partner),
        json!({"user_id": pu}),
    )
    .await;
    let (_, fm) = user_in(&app, m.tenant, "fm@fleet.example.com", Role::FleetManager).await;

    sqlx::query("INSERT INTO events (device_id, time, kind, attributes) VALUES ($1, now(), 'dtc_raised', $2)")
        .bind(m.device)
        .bind(json!({"code": "P0301", "description": "cylinder 1 misfire"}))
        .execute(app.pool())
        .await
        .unwrap();
    // What `clutch serve` runs every minute.
    let n = services::recommendations::sweep(app.pool(), Utc::now() - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(n, 1);

    let r = app
        .call(
            "GET",
            &format!("/api/v1/recommendations?vehicle_id={}", m.vehicle),
            Some(&fm),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rec = &r.json["items"][0];
    assert_eq!(rec["vehicle_id"], m.vehicle);
    assert_eq!(rec["code"], "P0301");
    assert_eq!(rec["status"], "open");
    assert!(rec["reason"].as_str().unwrap().contains("misfire"));
    let shop = &rec["matches"][0];
    assert_eq!(shop["partner_id"], m.partner);
    assert_eq!(shop["partner_name"], "Fleet Garage");
    assert_eq!(shop["service_id"], m.service_id);
    assert_eq!(shop["service_name"], "diagnostics");
    assert_eq!(shop["price_minor"], 12_000);
    assert!(shop["distance_m"].as_f64().unwrap() > 0.0);
    let rec_id = rec["id"].as_i64().unwrap();
    let (_, stranger) = app.tenant_user("Stranger", Role::Admin).await;
    assert_eq!(
        app.call(
            "GET",
            &format!("/api/v1/recommendations/{rec_id}"),
            Some(&stranger),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );

    let start = tomorrow(10);
    let accept = json!({"partner_id": m.partner, "service_id": m.service_id, "start": start});
    let r = app
        .call(
            "POST",
            &format!("/api/v1/recommendations/{rec_id}/accept"),
            Some(&stranger),
            Some(accept.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .call(
            "POST",
            &format!("/api/v1/recommendations/{rec_id}/accept"),
            Some(&fm),
            Some(accept.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let booking = r.json["id"].as_i64().unwrap();
    assert_eq!(r.json["partner_id"], m.partner);
    assert_eq!(r.json["vehicle_id"], m.vehicle);
    let r = app
        .call(
            "POST",
            &format!("/api/v1/recommendations/{rec_id}/accept"),
            Some(&fm),
            Some(accept),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "accepted once: {}", r.text);
    let r = app
        .call("GET", &format!("/api/v1/recommendations/{rec_id}"), Some(&fm), None)
        .await;
    assert_eq!(r.json["status"], "accepted");
    assert_eq!(r.json["booking_id"], booking);
    let r = app
        .call(
            "POST",
            &format!("/api/v1/recommendations/{rec_id}/dismiss"),
            Some(&fm),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "accepted, not dismissable: {}", r.text);
    // A second fault the fleet chooses to ignore.
    sqlx::query("INSERT INTO events (device_id, time, kind, attributes) VALUES ($1, now(), 'dtc_raised', $2)")
        .bind(m.device)
        .bind(json!({"code": "P0420", "description": "catalyst efficiency"}))
        .execute(app.pool())
        .await
        .unwrap();
    services::recommendations::sweep(app.pool(), Utc::now() - Duration::hours(1))
        .await
        .unwrap();
    let open = app
        .call("GET", "/api/v1/recommendations?status=open", Some(&fm), None)
        .await;
    assert_eq!(open.json["items"][0]["code"], "P0420", "{}", open.text);
    let other = open.json["items"][0]["id"].as_i64().unwrap();
    let dismiss = format!("/api/v1/recommendations/{other}/dismiss");
    assert_eq!(
        app.call("POST", &dismiss, Some(&stranger), None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = app.call("POST", &dismiss, Some(&fm), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["status"], "dismissed");
    assert_eq!(
        app.call("POST", &dismiss, Some(&fm), None).await.status,
        StatusCode::CONFLICT
    );

    // The partner holds a part for the visit.
    post_ok(
        &app,
        &partner_tok,
        &format!("/api/v1/partners/{}/parts", m.partner),
        json!({"sku": "SPARK-4", "name": "spark plugs", "price_minor": 2_000, "stock": 4}),
    )
    .await;
    post_ok(
        &app,
        &partner_tok,
        &format!("/api/v1/partners/{}/reservations", m.partner),
        json!({"sku": "SPARK-4", "quantity": 4, "booking_id": booking}),
    )
    .await;

    // The partner works it; rating is refused until it is completed.
    let tr = format!("/api/v1/bookings/{booking}/transitions");
    let rate = format!("/api/v1/partners/{}/ratings", m.partner);
    let r = app
        .call(
            "POST",
            &rate,
            Some(&fm),
            Some(json!({"booking_id": booking, "stars": 5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    for to in ["confirmed", "in_progress", "completed"] {
        let r = post_ok(&app, &partner_tok, &tr, json!({"to": to})).await;
        assert_eq!(r["status"], to);
    }

    let parts = app
        .call(
            "GET",
            &format!("/api/v1/partners/{}/parts?sku=SPARK-4", m.partner),
            Some(&partner_tok),
            None,
        )
        .await;
    assert_eq!(
        parts.json["items"][0]["stock"], 0,
        "completion consumed the held parts: {}",
        parts.text
    );
    assert_eq!(parts.json["items"][0]["reserved"], 0);

    // Pay for it: authorise, capture; settle the 15 % commission; pay the partner out.
    let pay = post_ok(&app, &fm, "/api/v1/payments", json!({"booking_id": booking})).await;
    let pid = pay["id"].as_i64().unwrap();
    assert_eq!(pay["amount"], 12_000);
    assert_eq!(pay["partner_id"], m.partner);
    assert_eq!(pay["booking_id"], booking);
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&fm),
            Some(json!({"booking_id": booking})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "one live payment per booking: {}",
        r.text
    );
    let r = app
        .call("POST", &format!("/api/v1/payments/{pid}/capture"), Some(&fm), None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "capture before authorisation: {}",
        r.text
    );
    post_ok(
        &app,
        &fm,
        &format!("/api/v1/payments/{pid}/authorize"),
        json!({"card_token": "tok_visa"}),
    )
    .await;
    let r = app
        .call(
            "POST",
            &format!("/api/v1/payments/{pid}/capture"),
            Some(&fm),
            Some(json!({"amount": 12_001})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "over-capture: {}", r.text);
    let r = post_ok(&app, &fm, &format!("/api/v1/payments/{pid}/capture"), json!({})).await;
    assert_eq!(r["status"], "captured");
    assert_eq!(r["captured"], 12_000);
    let b = app
        .call("GET", &format!("/api/v1/bookings/{booking}"), Some(&fm), None)
        .await;
    assert_eq!(b.json["payment_id"], pid);
    assert_eq!(b.json["status"], "completed");
    let r = app
        .call("POST", &format!("/api/v1/payments/{pid}/settle"), Some(&fm), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "settlement is for admins");
    let s = post_ok(&app, &m.admin, &format!("/api/v1/payments/{pid}/settle"), json!({})).await;
    assert_eq!(s["commission"], 1_800, "15 % of 120.00 without tax region");
    let r = app
        .call("POST", &format!("/api/v1/payments/{pid}/settle"), Some(&m.admin), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "settled once");
    let po = post_ok(&app, &m.admin, "/api/v1/payouts", json!({"partner_id": m.partner})).await;
    assert_eq!(po["amount"], 10_200);
    let r = app
        .call(
            "POST",
            "/api/v1/payouts",
            Some(&m.admin),
            Some(json!({"partner_id": m.partner})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "nothing left to pay out");
    let r = app.call("GET", "/api/v1/payouts", Some(&partner_tok), None).await;
    assert_eq!(r.json["items"][0]["amount"], 10_200, "{}", r.text);

    // The ledger: commission in platform revenue, payout out of the partner's payable,
    // every currency sums to zero.
    let revenue: i64 =
        sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE kind = 'platform_revenue' AND currency = 'EUR'")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(revenue, 1_800);
    let (payable, payout_tx): (i64, i64) = sqlx::query_as(
        "SELECT a.balance, (SELECT count(*) FROM ledger_transactions WHERE kind = 'payout') FROM ledger_accounts a \
         WHERE a.kind = 'partner_payable' AND a.owner_id = $1",
    )
    .bind(m.partner)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!((payable, payout_tx), (0, 1));
    let sums = services::ledger::trial_balance(app.pool()).await.unwrap();
    assert!(sums.values().all(|s| *s == 0), "{sums:?}");

    // Rated once, and the audit trail names the actors.
    let r = app
        .call(
            "POST",
            &rate,
            Some(&fm),
            Some(json!({"booking_id": booking, "stars": 4, "comment": "quick"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .call(
            "POST",
            &rate,
            Some(&fm),
            Some(json!({"booking_id": booking, "stars": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app.call("GET", &rate, Some(&fm), None).await;
    assert_eq!(r.json["count"], 1);
    let audit: Vec<(String, String)> =
        sqlx::query_as("SELECT to_status, actor FROM booking_audit WHERE booking_id = $1 ORDER BY id")
            .bind(booking)
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(audit.len(), 4);
    assert_eq!(audit[3], ("completed".to_string(), format!("user:{pu}")));
}

/// A captured payment, created over HTTP.
async fn captured(app: &App, tok: &str, amount: i64) -> i64 {
    let p = post_ok(
        app,
        tok,
        "/api/v1/payments",
        json!({"currency": "EUR", "amount": amount}),
    )
    .await;
    let id = p["id"].as_i64().unwrap();
    post_ok(
        app,
        tok,
        &format!("/api/v1/payments/{id}/authorize"),
        json!({"card_token": "tok_visa"}),
    )
    .await;
    post_ok(app, tok, &format!("/api/v1/payments/{id}/capture"), json!({})).await;
    id
}

#[tokio::test]
async fn concurrent_over_refunds_never_exceed_the_capture() {
    let app = app().await;
    let (_, a) = app.tenant_user("Alpha", Role::Admin).await;
    let id = captured(&app, &a, 10_000).await;
    // 20 parallel refunds of 15 % each: at most six fit in the capture.
    let body = json!({"payment_id": id, "amount": 1_500, "reason": "race"});
    let rs = join_all((0..20).map(|_| app.call("POST", "/api/v1/refunds", Some(&a), Some(body.clone())))).await;
    let ok = rs.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(
        ok,
        6,
        "{:?}",
        rs.iter().map(|r| (r.status, r.text.clone())).collect::<Vec<_>>()
    );
    for r in rs.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    }
    let p = app.call("GET", &format!("/api/v1/payments/{id}"), Some(&a), None).await;
    assert_eq!(p.json["refunded"], 9_000);
    assert_eq!(p.json["status"], "partially_refunded");
    // The rest in full (no amount), then nothing is left.
    let r = post_ok(&app, &a, "/api/v1/refunds", json!({"payment_id": id})).await;
    assert_eq!(r["amount"], 1_000);
    let r = app
        .call(
            "POST",
            "/api/v1/refunds",
            Some(&a),
            Some(json!({"payment_id": id, "amount": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a refunded payment: {}", r.text);
    let list = app
        .call("GET", &format!("/api/v1/refunds?payment_id={id}"), Some(&a), None)
        .await;
    let total: i64 = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 10_000);
    let refunded: i64 = sqlx::query_scalar("SELECT refunded FROM payment_intents WHERE id = $1")
        .bind(id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(refunded, 10_000);
    // A refund retried with one key — ten racing copies — refunds once.
    let id2 = captured(&app, &a, 1_000).await;
    let body = json!({"payment_id": id2, "amount": 300});
    let rs = join_all((0..10).map(|_| {
        app.call_with(
            "POST",
            "/api/v1/refunds",
            Some(&a),
            Some(body.clone()),
            &[("idempotency-key", "rf-1")],
        )
    }))
    .await;
    let ids: std::collections::BTreeSet<i64> = rs
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            r.json["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let p = app
        .call("GET", &format!("/api/v1/payments/{id2}"), Some(&a), None)
        .await;
    assert_eq!(p.json["refunded"], 300);
    // Another tenant can neither see nor refund it.
    let (_, b) = app.tenant_user("Beta", Role::Admin).await;
    let r = app
        .call(
            "POST",
            "/api/v1/refunds",
            Some(&b),
            Some(json!({"payment_id": id, "amount": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        app.call("GET", "/api/v1/refunds", Some(&b), None).await.json["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let sums = services::ledger::trial_balance(app.pool()).await.unwrap();
    assert!(sums.values().all(|s| *s == 0), "{sums:?}");
}

#[tokio::test]
async fn idempotency_key_replays_the_same_payment_and_errors_map_to_4xx() {
    let app = app().await;
    let (_, a) = app.tenant_user("Alpha", Role::Admin).await;
    let (_, b) = app.tenant_user("Beta", Role::Admin).await;
    let body = json!({"currency": "EUR", "amount": 2_500});
    let first = app
        .call_with(
            "POST",
            "/api/v1/payments",
            Some(&a),
            Some(body.clone()),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let again = app
        .call_with(
            "POST",
            "/api/v1/payments",
            Some(&a),
            Some(body.clone()),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json["id"], first.json["id"]);
    let other = app
        .call_with(
            "POST",
            "/api/v1/payments",
            Some(&a),
            Some(json!({"currency": "EUR", "amount": 9_999})),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", other.text);
    // The same key in another tenant is another payment, never a replay of Alpha's.
    let theirs = app
        .call_with(
            "POST",
            "/api/v1/payments",
            Some(&b),
            Some(body.clone()),
            &[("idempotency-key", "order-1")],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_ne!(theirs.json["id"], first.json["id"]);
    // Ten racing requests with a fresh key create one payment.
    let rs = join_all((0..10).map(|_| {
        app.call_with(
            "POST",
            "/api/v1/payments",
            Some(&a),
            Some(json!({"currency": "EUR", "amount": 700})),
            &[("idempotency-key", "race-1")],
        )
    }))
    .await;
    let ids: std::collections::BTreeSet<i64> = rs
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .map(|r| r.json["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "{:?}",
        rs.iter().map(|r| (r.status, r.text.clone())).collect::<Vec<_>>()
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM payment_intents WHERE amount = 700")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Errors: unknown partner 404, currency mismatch and unknown currency 422, declined
    // 402, another tenant's payment 404, void after capture 409.
    let m = market(&app, "Gamma", "356307042441077", 1).await;
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&m.admin),
            Some(json!({"currency": "EUR", "amount": 100, "partner_id": 987_654})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&m.admin),
            Some(json!({"currency": "USD", "amount": 100, "partner_id": m.partner})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("currency mismatch")
    );
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&m.admin),
            Some(json!({"currency": "XXX", "amount": 100})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&m.admin),
            Some(json!({"currency": "EUR", "amount": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call("POST", "/api/v1/payments", Some(&m.admin), Some(json!({"currency": "EUR", "amount": 100, "parts": [{"method": "card", "payer": "tenant", "amount": 60}]})))
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "parts must sum to the amount: {}",
        r.text
    );
    let p = post_ok(
        &app,
        &m.admin,
        "/api/v1/payments",
        json!({"currency": "EUR", "amount": 100}),
    )
    .await;
    let r = app
        .call(
            "POST",
            &format!("/api/v1/payments/{}/authorize", p["id"]),
            Some(&m.admin),
            Some(json!({"card_token": "tok_decline"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "declined");
    let pid = first.json["id"].as_i64().unwrap();
    for (m_, u, body) in [
        ("GET", format!("/api/v1/payments/{pid}"), None),
        (
            "POST",
            format!("/api/v1/payments/{pid}/authorize"),
            Some(json!({"card_token": "tok_visa"})),
        ),
        ("POST", format!("/api/v1/payments/{pid}/void"), None),
    ] {
        assert_eq!(
            app.call(m_, &u, Some(&b), body).await.status,
            StatusCode::NOT_FOUND,
            "{m_} {u}"
        );
    }
    let id = captured(&app, &a, 500).await;
    let r = app
        .call("POST", &format!("/api/v1/payments/{id}/void"), Some(&a), None)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let list = app
        .call("GET", "/api/v1/payments?status=captured", Some(&a), None)
        .await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn wallets_split_payments_invoices() {
    let app = app().await;
    let (t, a) = app.tenant_user("Alpha", Role::Admin).await;
    let (_, cust) = user_in(&app, t, "customer@alpha.example.com", Role::Customer).await;
    let r = app
        .call(
            "POST",
            "/api/v1/wallets/top-ups",
            Some(&a),
            Some(json!({"currency": "EUR", "amount": 5_000, "card_token": "tok_visa"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a top-up needs an Idempotency-Key: {}",
        r.text
    );
    let top = json!({"currency": "EUR", "amount": 5_000, "card_token": "tok_visa"});
    for _ in 0..2 {
        let r = app
            .call_with(
                "POST",
                "/api/v1/wallets/top-ups",
                Some(&a),
                Some(top.clone()),
                &[("idempotency-key", "top-1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["balance"], 5_000, "the replay does not top up twice");
    }
    let r = app
        .call_with(
            "POST",
            "/api/v1/wallets/top-ups",
            Some(&cust),
            Some(top.clone()),
            &[("idempotency-key", "top-1")],
        )
        .await;
    assert_eq!(r.json["balance"], 5_000);
    assert_eq!(r.json["owner"], "user");
    let w = app.call("GET", "/api/v1/wallets", Some(&a), None).await;
    assert_eq!(w.json["items"][0]["balance"], 5_000);
    assert_eq!(w.json["items"][0]["owner"], "tenant");
    // Split: 30.00 from the fleet's wallet, 70.00 by card.
    let p = post_ok(
        &app,
        &a,
        "/api/v1/payments",
        json!({"currency": "EUR", "amount": 10_000, "parts": [
            {"method": "wallet", "payer": "tenant", "amount": 3_000},
            {"method": "card", "payer": "tenant", "amount": 7_000}]}),
    )
    .await;
    let id = p["id"].as_i64().unwrap();
    post_ok(
        &app,
        &a,
        &format!("/api/v1/payments/{id}/authorize"),
        json!({"card_token": "tok_visa"}),
    )
    .await;
    post_ok(&app, &a, &format!("/api/v1/payments/{id}/capture"), json!({})).await;
    let w = app.call("GET", "/api/v1/wallets", Some(&a), None).await;
    assert_eq!(w.json["items"][0]["balance"], 2_000);
    let e = app
        .call("GET", "/api/v1/wallets/entries?currency=EUR", Some(&a), None)
        .await;
    let amounts: Vec<i64> = e.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [5_000, -3_000]);
    // A customer pays only as itself and only for its own bookings.
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&cust),
            Some(json!({"currency": "EUR", "amount": 100})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        app.call("GET", "/api/v1/payments", Some(&cust), None).await.json["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // More from the wallet than it holds.
    let p = post_ok(&app, &a, "/api/v1/payments", json!({"currency": "EUR", "amount": 9_000, "parts": [{"method": "wallet", "payer": "tenant", "amount": 9_000}]})).await;
    let r = app
        .call(
            "POST",
            &format!("/api/v1/payments/{}/authorize", p["id"]),
            Some(&a),
            Some(json!({"card_token": "tok_visa"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "insufficient funds: {}", r.text);
    assert_eq!(r.json["error"]["code"], "insufficient_funds");

    // Invoices: issued once per month; the second request returns it.
    let month = Utc::now().format("%Y-%m").to_string();
    let body = json!({"month": month, "currency": "EUR", "per_active_device": 500, "per_100_km": 100});
    let r = app.call("POST", "/api/v1/invoices", Some(&a), Some(body.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let inv = r.json["id"].as_i64().unwrap();
    assert!(r.json["lines"].is_array());
    let r = app.call("POST", "/api/v1/invoices", Some(&a), Some(body)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["id"], inv);
    let r = app
        .call(
            "POST",
            "/api/v1/invoices",
            Some(&a),
            Some(json!({"month": "2999-01", "currency": "EUR", "per_active_device": 1, "per_100_km": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            "POST",
            "/api/v1/invoices",
            Some(&a),
            Some(json!({"month": "May", "currency": "EUR", "per_active_device": 1, "per_100_km": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.call("GET", "/api/v1/invoices", Some(&a), None).await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_, b) = app.tenant_user("Beta", Role::Admin).await;
    assert_eq!(
        app.call("GET", &format!("/api/v1/invoices/{inv}"), Some(&b), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn gateway_webhook_verifies_signatures() {
    let app = app_with(api::ApiConfig {
        gateway_webhook_secrets: vec!["whsec_new".into(), "whsec_old".into()],
        ..config()
    })
    .await;
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let send = |sig: String, body: &'static [u8]| {
        let req = axum::http::Request::post("/api/v1/payments/webhook")
            .header("content-type", "application/json")
            .header("webhook-signature", sig)
            .body(axum::body::Body::from(body))
            .unwrap();
        app.send(req)
    };
    let now = Utc::now().timestamp();
    let good = format!(
        "t={now},v1={}",
        services::gateway::sign_webhook(b"whsec_new", now, body)
    );
    let r = send(good.clone(), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json, json!({"received": true, "duplicate": false}));
    let r = send(good, body).await;
    assert_eq!(r.json["duplicate"], true, "redelivery is deduplicated by event id");
    // During a rotation the old secret still verifies.
    let body2 = br#"{"id":"evt_2","type":"charge.refunded"}"#;
    let old = format!(
        "t={now},v1={}",
        services::gateway::sign_webhook(b"whsec_old", now, body2)
    );
    assert_eq!(send(old, body2).await.status, StatusCode::OK);
    // Wrong secret, tampered body, stale or future timestamp, malformed header: 401.
    let body3 = br#"{"id":"evt_3","type":"x"}"#;
    let wrong = format!("t={now},v1={}", services::gateway::sign_webhook(b"guess", now, body3));
    let tampered = format!(
        "t={now},v1={}",
        services::gateway::sign_webhook(b"whsec_new", now, b"{}")
    );
    let stale = format!(
        "t={},v1={}",
        now - 301,
        services::gateway::sign_webhook(b"whsec_new", now - 301, body3)
    );
    let future = format!(
        "t={},v1={}",
        now + 400,
        services::gateway::sign_webhook(b"whsec_new", now + 400, body3)
    );
    for sig in [
        wrong,
        tampered,
        stale,
        future,
        "garbage".to_string(),
        format!("t={now}"),
    ] {
        let r = send(sig.clone(), body3).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{sig}: {}", r.text);
        assert_eq!(r.json["error"]["code"], "bad_signature");
    }
    let req = axum::http::Request::post("/api/v1/payments/webhook")
        .body(axum::body::Body::from(&body3[..]))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM gateway_events")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 2);

    // Without configured secrets nothing is accepted.
    let bare = app_with(config()).await;
    let req = axum::http::Request::post("/api/v1/payments/webhook")
        .header("webhook-signature", format!("t={now},v1=00"))
        .body(axum::body::Body::from(&body[..]))
        .unwrap();
    assert_eq!(bare.send(req).await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn customers_see_and_pay_only_their_own_bookings_and_hold_at_most_five() {
    let app = app().await;
    let m = market(&app, "Shop", "356307042441055", 10).await;
    let (_, c1) = user_in(&app, m.tenant, "one@shop.example.com", Role::Customer).await;
    let (_, c2) = user_in(&app, m.tenant, "two@shop.example.com", Role::Customer).await;
    let (_, fm) = user_in(&app, m.tenant, "fm@shop.example.com", Role::FleetManager).await;
    let book = |h: u32| json!({"vehicle_id": m.vehicle, "partner_id": m.partner, "service_id": m.service_id, "start": tomorrow(h)});
    let mine = post_ok(&app, &c1, "/api/v1/bookings", book(8)).await;
    let id = mine["id"].as_i64().unwrap();
    assert!(mine["customer_id"].is_number());
    assert_eq!(
        app.call("GET", &format!("/api/v1/bookings/{id}"), Some(&c2), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert!(
        app.call("GET", "/api/v1/bookings", Some(&c2), None).await.json["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        app.call("GET", "/api/v1/bookings", Some(&fm), None).await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Paying: only for one's own booking, as oneself.
    let r = app
        .call("POST", "/api/v1/payments", Some(&c2), Some(json!({"booking_id": id})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&c1),
            Some(json!({"booking_id": id, "parts": [{"method": "card", "payer": "tenant", "amount": 12000}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = app
        .call(
            "POST",
            "/api/v1/payments",
            Some(&c1),
            Some(json!({"booking_id": id, "currency": "USD"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "currency mismatch with the booking: {}",
        r.text
    );
    let p = post_ok(&app, &c1, "/api/v1/payments", json!({"booking_id": id})).await;
    assert_eq!(p["parts"][0]["payer"], "user");
    assert_eq!(
        app.call("GET", &format!("/api/v1/payments/{}", p["id"]), Some(&c2), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call("GET", "/api/v1/payments", Some(&c1), None).await.json["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A customer cancels but cannot confirm.
    let tr = format!("/api/v1/bookings/{id}/transitions");
    assert_eq!(
        app.call("POST", &tr, Some(&c1), Some(json!({"to": "confirmed"})))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call("POST", &tr, Some(&c2), Some(json!({"to": "cancelled"})))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // At most five unconfirmed holds per customer (SECURITY API6).
    for h in 9..13 {
        post_ok(&app, &c1, "/api/v1/bookings", book(h)).await;
    }
    let r = app.call("POST", "/api/v1/bookings", Some(&c1), Some(book(14))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    post_ok(&app, &c1, &tr, json!({"to": "cancelled"})).await;
    post_ok(&app, &c1, "/api/v1/bookings", book(14)).await;
    // Drivers have no business here.
    let (_, drv) = user_in(&app, m.tenant, "drv@shop.example.com", Role::Driver).await;
    assert_eq!(
        app.call("GET", "/api/v1/bookings", Some(&drv), None).await.status,
        StatusCode::FORBIDDEN
    );
}
