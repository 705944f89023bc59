//! Drivers and customers see only their own objects; the cached whole-fleet latest
//! positions (ETag/304, gzip, read-your-writes).

mod common;

use api::auth::Role;
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};

fn ids(v: &Value, key: &str) -> Vec<i64> {
    let mut out: Vec<i64> = v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {v}"))
        .iter()
        .filter_map(|i| i[key].as_i64())
        .collect();
    out.sort();
    out.dedup();
    out
}

struct Fleet {
    v1: i64,
    v2: i64,
    v3: i64,
    d1: i64,
    dev1: i64,
    dev2: i64,
    trip1: i64,
    trip2: i64,
}

async fn fleet(app: &App, tok: &str, tid: i64) -> Fleet {
    let mut v = Vec::new();
    for name in ["one", "two", "three"] {
        let r = app
            .call("POST", "/api/v1/vehicles", Some(tok), Some(json!({"name": name})))
            .await;
        v.push(r.json["id"].as_i64().unwrap());
    }
    let d1 = app
        .call("POST", "/api/v1/drivers", Some(tok), Some(json!({"name": "Dee"})))
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let mut devs = Vec::new();
    for (i, imei) in ["356307042441013", "356307042441021", "356307042441039"]
        .iter()
        .enumerate()
    {
        let r = app
            .call(
                "POST",
                "/api/v1/devices",
                Some(tok),
                Some(json!({"identifier": imei, "protocol": "teltonika", "vehicle_id": v[i]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        devs.push(r.json["id"].as_i64().unwrap());
    }
    let r = app
        .call(
            "POST",
            &format!("/api/v1/drivers/{d1}/assignments"),
            Some(tok),
            Some(json!({"vehicle_id": v[0]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for &dev in &devs {
        app.publish(ingest::DeviceBatch {
            device_id: dev,
            positions: (0..10).map(|s| pos(dev, s, 48.0 + dev as f64 * 0.01, 2.0)).collect(),
            events: vec![],
        })
        .await;
    }
    let t0 = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
    let mut trips = Vec::new();
    for &dev in &devs[..2] {
        trips.push(
            store::query::upsert_trip(
                app.pool(),
                &store::query::TripRow {
                    device_id: dev,
                    start_time: t0,
                    end_time: Some(t0 + chrono::Duration::minutes(10)),
                    start_lat: None,
                    start_lon: None,
                    end_lat: None,
                    end_lon: None,
                    distance_m: Some(1000.0),
                    max_speed_kmh: None,
                    avg_speed_kmh: None,
                    fuel_used_l: None,
                    driver_id: None,
                    attributes: json!({}),
                },
            )
            .await
            .unwrap(),
        );
    }
    for (kind, id) in [("vehicle", v[0]), ("vehicle", v[1]), ("vehicle", v[2]), ("driver", d1)] {
        sqlx::query(
            "INSERT INTO scores (tenant_id, subject_kind, subject_id, period, period_start, score) \
             VALUES ($1, $2, $3, 'day', $4, 80)",
        )
        .bind(tid)
        .bind(kind)
        .bind(id)
        .bind(t0)
        .execute(app.pool())
        .await
        .unwrap();
    }
    Fleet {
        v1: v[0],
        v2: v[1],
        v3: v[2],
        d1,
        dev1: devs[0],
        dev2: devs[1],
        trip1: trips[0],
        trip2: trips[1],
    }
}

const RANGE: &str = "from=2026-09-21T00:00:00Z&to=2026-09-23T00:00:00Z";

#[tokio::test]
async fn drivers_and_customers_see_only_their_own_objects() {
    let app = app().await;
    let (tid, admin) = app.tenant_user("Acme", Role::Admin).await;
    let f = fleet(&app, &admin, tid).await;
    let drv_user = app.user(tid, "dee@acme.example.com", Role::Driver).await;
    let cust_user = app.user(tid, "carl@acme.example.com", Role::Customer).await;
    let drv = app.login("dee@acme.example.com").await;
    let cust = app.login("carl@acme.example.com").await;

    // Unlinked, a driver and a customer see nothing (not everything).
    for tok in [&drv, &cust] {
        let r = app.call("GET", "/api/v1/vehicles", Some(tok), None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(ids(&r.json, "id").is_empty(), "{}", r.text);
        let r = app.call("GET", "/api/v1/positions/latest", Some(tok), None).await;
        assert!(ids(&r.json, "device_id").is_empty(), "{}", r.text);
    }

    // Links: only an admin links users to drivers; fleet managers set owners.
    let r = app
        .call(
            "PUT",
            &format!("/api/v1/users/{drv_user}/driver"),
            Some(&admin),
            Some(json!({"driver_id": f.d1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .call(
            "PUT",
            &format!("/api/v1/vehicles/{}/owner", f.v2),
            Some(&admin),
            Some(json!({"user_id": cust_user})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .call(
            "PUT",
            &format!("/api/v1/users/{drv_user}/driver"),
            Some(&admin),
            Some(json!({"driver_id": 999_999})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call(
            "PUT",
            &format!("/api/v1/vehicles/{}/owner", f.v2),
            Some(&drv),
            Some(json!({"user_id": drv_user})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    for (who, tok, mine, my_dev, my_trip, other, other_trip) in [
        ("driver", &drv, f.v1, f.dev1, f.trip1, f.v2, f.trip2),
        ("customer", &cust, f.v2, f.dev2, f.trip2, f.v1, f.trip1),
    ] {
        let r = app.call("GET", "/api/v1/vehicles", Some(tok), None).await;
        assert_eq!(ids(&r.json, "id"), [mine], "{who}: {}", r.text);
        let r = app
            .call("GET", &format!("/api/v1/vehicles/{mine}"), Some(tok), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{who}");
        for v in [other, f.v3] {
            let r = app.call("GET", &format!("/api/v1/vehicles/{v}"), Some(tok), None).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{who} reads vehicle {v}");
            let r = app
                .call(
                    "GET",
                    &format!("/api/v1/positions/history?vehicle_id={v}&{RANGE}"),
                    Some(tok),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{who} history of {v}");
            let r = app
                .call(
                    "GET",
                    &format!("/api/v1/positions/latest?vehicle_id={v}"),
                    Some(tok),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{who} latest of {v}");
        }
        let r = app.call("GET", "/api/v1/positions/latest", Some(tok), None).await;
        assert_eq!(ids(&r.json, "device_id"), [my_dev], "{who}: {}", r.text);
        let r = app
            .call(
                "GET",
                &format!("/api/v1/positions/history?vehicle_id={mine}&{RANGE}"),
                Some(tok),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(ids(&r.json, "device_id"), [my_dev], "{who}");
        let r = app
            .call("GET", &format!("/api/v1/trips?{RANGE}"), Some(tok), None)
            .await;
        assert_eq!(ids(&r.json, "id"), [my_trip], "{who}: {}", r.text);
        let r = app
            .call("GET", &format!("/api/v1/trips/{my_trip}"), Some(tok), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = app
            .call("GET", &format!("/api/v1/trips/{other_trip}"), Some(tok), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{who}");
        let r = app
            .call("GET", "/api/v1/scores?from=2026-09-01T00:00:00Z", Some(tok), None)
            .await;
        let mut seen: Vec<(String, i64)> = r.json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["subject_kind"].as_str().unwrap().to_string(),
                    s["subject_id"].as_i64().unwrap(),
                )
            })
            .collect();
        seen.sort();
        let mut expect = vec![("vehicle".to_string(), mine)];
        if who == "driver" {
            expect.insert(0, ("driver".to_string(), f.d1));
        }
        assert_eq!(seen, expect, "{who}: {}", r.text);
        // Fleet configuration stays closed to them.
        for path in [
            "/api/v1/devices",
            "/api/v1/drivers",
            "/api/v1/events",
            "/api/v1/webhooks",
        ] {
            let r = app.call("GET", path, Some(tok), None).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{who} {path}");
        }
    }

    // Reports: their own subjects only.
    let r = app
        .call(
            "GET",
            "/api/v1/reports/daily?from=2026-09-21&to=2026-09-22&tz=UTC",
            Some(&drv),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(ids(&r.json, "vehicle_id"), [f.v1], "{}", r.text);
    let r = app
        .call(
            "GET",
            &format!(
                "/api/v1/reports/daily?from=2026-09-21&to=2026-09-22&tz=UTC&ids={}",
                f.v2
            ),
            Some(&drv),
            None,
        )
        .await;
    assert!(ids(&r.json, "vehicle_id").is_empty(), "{}", r.text);
    let r = app
        .call(
            "GET",
            "/api/v1/reports/daily?from=2026-09-21&to=2026-09-22&tz=UTC",
            Some(&cust),
            None,
        )
        .await;
    assert_eq!(ids(&r.json, "vehicle_id"), [f.v2], "{}", r.text);
    let r = app
        .call(
            "GET",
            "/api/v1/reports/daily?from=2026-09-21&to=2026-09-22&tz=UTC",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ids(&r.json, "vehicle_id"), [f.v1, f.v2], "{}", r.text);

    // Reassigned, the driver's old vehicle leaves their view.
    sqlx::query("UPDATE driver_assignments SET start_time = now() - interval '1 hour', end_time = now() - interval '1 second' WHERE driver_id = $1")
        .bind(f.d1)
        .execute(app.pool())
        .await
        .unwrap();
    let r = app.call("GET", "/api/v1/vehicles", Some(&drv), None).await;
    assert!(ids(&r.json, "id").is_empty(), "{}", r.text);
}

#[tokio::test]
async fn latest_positions_are_cached_with_etag_gzip_and_read_your_writes() {
    let app = app().await;
    let (tid, admin) = app.tenant_user("Acme", Role::Admin).await;
    let f = fleet(&app, &admin, tid).await;
    let r = app.call("GET", "/api/v1/positions/latest", Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(ids(&r.json, "device_id").len(), 3);
    let tag = r.headers["etag"].to_str().unwrap().to_string();
    let again = app
        .call_with(
            "GET",
            "/api/v1/positions/latest",
            Some(&admin),
            None,
            &[("if-none-match", &tag)],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.text.is_empty());

    let gz = app
        .call_with(
            "GET",
            "/api/v1/positions/latest",
            Some(&admin),
            None,
            &[("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(gz.status, StatusCode::OK);
    assert_eq!(gz.headers["content-encoding"], "gzip");
    assert_ne!(gz.headers["etag"].to_str().unwrap(), tag, "one tag per encoding");
    let raw = {
        // The text helper is lossy; ask again for the bytes.
        let req = axum::http::Request::get("/api/v1/positions/latest")
            .header("authorization", format!("Bearer {admin}"))
            .header("accept-encoding", "gzip")
            .body(axum::body::Body::empty())
            .unwrap();
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let resp = app.router.clone().oneshot(req).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut plain).unwrap();
    assert_eq!(plain, r.text);

    // A new fix is visible on the next request after its ack, with a new tag.
    app.publish(ingest::DeviceBatch {
        device_id: f.dev1,
        positions: vec![pos(f.dev1, 5000, 10.5, 20.5)],
        events: vec![],
    })
    .await;
    let r2 = app
        .call_with(
            "GET",
            "/api/v1/positions/latest",
            Some(&admin),
            None,
            &[("if-none-match", &tag)],
        )
        .await;
    assert_eq!(r2.status, StatusCode::OK);
    assert_ne!(r2.headers["etag"].to_str().unwrap(), tag);
    let p = r2.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["device_id"] == f.dev1)
        .unwrap()
        .clone();
    assert_eq!(p["lat"], 10.5);
    // Another tenant has its own entry.
    let (_, other) = app.tenant_user("Other", Role::Admin).await;
    let r = app.call("GET", "/api/v1/positions/latest", Some(&other), None).await;
    assert!(ids(&r.json, "device_id").is_empty(), "{}", r.text);
    let _ = f.v3;
}

/// `?vehicle_id=` and `?device_id=` are cut from the cached fleet answer (crate::latest);
/// they must answer exactly as the database path: fresh after an ack, 404 for another
/// tenant's ids or a device that is not on the named vehicle, empty for a vehicle without fixes.
#[tokio::test]
async fn latest_for_one_vehicle_or_device_comes_from_the_cache_and_stays_correct() {
    let app = app().await;
    let (tid, admin) = app.tenant_user("Acme", Role::Admin).await;
    let f = fleet(&app, &admin, tid).await;
    let (_, fm) = app.tenant_user("Acme", Role::FleetManager).await;
    let get = |q: String| {
        let fm = fm.clone();
        let app = &app;
        async move {
            app.call("GET", &format!("/api/v1/positions/latest?{q}"), Some(&fm), None)
                .await
        }
    };
    let r = get(format!("vehicle_id={}", f.v1)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(ids(&r.json, "device_id"), vec![f.dev1]);
    assert_eq!(r.json["items"][0]["vehicle_id"], f.v1);
    assert!(r.headers.contains_key("etag"));
    let r = get(format!("device_id={}", f.dev2)).await;
    assert_eq!(ids(&r.json, "device_id"), vec![f.dev2]);
    let r = get(format!("device_id={}&vehicle_id={}", f.dev2, f.v1)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);

    app.publish(ingest::DeviceBatch {
        device_id: f.dev1,
        positions: vec![pos(f.dev1, 7000, 11.5, 21.5)],
        events: vec![],
    })
    .await;
    let r = get(format!("vehicle_id={}", f.v1)).await;
    assert_eq!(r.json["items"][0]["lat"], 11.5, "{}", r.text);

    let r = app
        .call("POST", "/api/v1/vehicles", Some(&admin), Some(json!({"name": "empty"})))
        .await;
    let empty = r.json["id"].as_i64().unwrap();
    let r = get(format!("vehicle_id={empty}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(ids(&r.json, "device_id").is_empty());

    let (_, other) = app.tenant_user("Other", Role::FleetManager).await;
    for q in [format!("vehicle_id={}", f.v1), format!("device_id={}", f.dev1)] {
        let r = app
            .call("GET", &format!("/api/v1/positions/latest?{q}"), Some(&other), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{q}: {}", r.text);
    }
}
