//! Admin and privacy over HTTP: the audit trail, CSV import and bulk assignment, streamed
//! export, system health, a driver's export/erasure/consent, consent on the live stream.

mod common;

use std::time::Duration;

use api::auth::Role;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn csv(app: &App, path: &str, tok: &str, body: &str) -> Resp {
    app.send(
        Request::post(path)
            .header("authorization", format!("Bearer {tok}"))
            .header("content-type", "text/csv")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

async fn audit_rows(app: &App, tok: &str, query: &str) -> Vec<Value> {
    let r = app
        .call("GET", &format!("/api/v1/admin/audit?{query}"), Some(tok), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn mutating_requests_are_audited_with_secrets_redacted_and_the_trail_is_append_only() {
    let app = app().await;
    let (ta, admin) = app.tenant_user("Alpha", Role::Admin).await;
    let (_, other_admin) = app.tenant_user("Beta", Role::Admin).await;
    let admin_id: i64 = app.call("GET", "/api/v1/me", Some(&admin), None).await.json["id"]
        .as_i64()
        .unwrap();

    // Secrets in requests and responses.
    let r = app
        .call(
            "POST",
            "/api/v1/users",
            Some(&admin),
            Some(json!({"email": "disp@alpha.example.com", "role": "dispatcher", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let disp_id = r.json["id"].as_i64().unwrap();
    let r = app
        .call(
            "POST",
            "/api/v1/api-keys",
            Some(&admin),
            Some(json!({"name": "ci", "scopes": ["read", "write"]})),
        )
        .await;
    let key_secret = r.json["secret"].as_str().unwrap().to_string();
    let key_id = r.json["id"].as_i64().unwrap();
    let totp = app.call("POST", "/api/v1/me/totp", Some(&admin), None).await;
    let totp_secret = totp.json["secret"].as_str().unwrap().to_string();
    let v = app
        .call(
            "POST",
            "/api/v1/vehicles",
            Some(&admin),
            Some(json!({"name": "Van", "vin": "1HGBH41JXMN109186"})),
        )
        .await;
    let veh = v.json["id"].as_i64().unwrap();
    let d = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&admin),
            Some(json!({"identifier": "356307042441013", "protocol": "teltonika", "name": "old name"})),
        )
        .await;
    let dev = d.json["id"].as_i64().unwrap();
    let m = app
        .call(
            "POST",
            &format!("/api/v1/devices/{dev}/mqtt-credentials"),
            Some(&admin),
            None,
        )
        .await;
    let mqtt_secret = m.json["secret"].as_str().unwrap().to_string();
    // Before/after on update and delete; the API key acts as the caller.
    let p = app
        .call(
            "PATCH",
            &format!("/api/v1/devices/{dev}"),
            Some(&key_secret),
            Some(json!({"name": "new name"})),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(
        app.call("DELETE", &format!("/api/v1/vehicles/{veh}"), Some(&admin), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let pu = app
        .call(
            "PATCH",
            &format!("/api/v1/users/{disp_id}"),
            Some(&admin),
            Some(json!({"name": "Dee"})),
        )
        .await;
    assert_eq!(pu.status, StatusCode::OK);
    // A refused request is recorded with who tried.
    let disp = app.login("disp@alpha.example.com").await;
    let refused = app
        .call(
            "POST",
            "/api/v1/users",
            Some(&disp),
            Some(json!({"email": "x@alpha.example.com", "role": "admin"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // A failed login names nobody (and keeps no password).
    let bad = app
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "disp@alpha.example.com", "password": "Wrong-password-987"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    // A GET is not a mutation; an anonymous POST to no route touches nothing.
    app.call("GET", "/api/v1/devices", Some(&admin), None).await;
    assert_eq!(
        app.call("POST", "/api/v1/nowhere", None, None).await.status,
        StatusCode::NOT_FOUND
    );
    let unrouted: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE path = '/api/v1/nowhere'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(unrouted, 0);

    // An idempotent replay (answered without the handler) is recorded with its caller too.
    for _ in 0..2 {
        let r = app
            .call_with(
                "POST",
                "/api/v1/groups",
                Some(&admin),
                Some(json!({"name": "Replayed"})),
                &[("idempotency-key", "grp-1")],
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let replays: Vec<Option<i64>> = sqlx::query_scalar("SELECT user_id FROM audit_log WHERE route = '/api/v1/groups'")
        .fetch_all(app.pool())
        .await
        .unwrap();
    assert_eq!(replays, vec![Some(admin_id), Some(admin_id)]);

    // Everything the table holds is free of the secrets.
    let all: String = sqlx::query_scalar("SELECT string_agg(to_jsonb(a)::text, E'\\n') FROM audit_log a")
        .fetch_one(app.pool())
        .await
        .unwrap();
    for secret in [
        "Wrong-password-987",
        PASSWORD,
        key_secret.as_str(),
        totp_secret.as_str(),
        mqtt_secret.as_str(),
        admin.as_str(),
    ] {
        assert!(!all.contains(secret), "secret {secret:?} in the audit trail");
    }
    assert!(all.contains("[redacted]"));
    let gets: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE method = 'GET'")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(gets, 0);
    let anon: (Option<i64>, i16) =
        sqlx::query_as("SELECT tenant_id, status FROM audit_log WHERE route = '/api/v1/auth/login' AND status = 401")
            .fetch_one(app.pool())
            .await
            .unwrap();
    assert_eq!(anon, (None, 401));

    // Reading it: the tenant's rows, newest first, with who/what/when/before/after.
    let rows = audit_rows(&app, &admin, "route=/api/v1/devices/{id}&method=patch").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["api_key_id"], key_id);
    assert_eq!(row["user_id"], admin_id);
    assert_eq!(row["status"], 200);
    assert_eq!(row["path_params"]["id"], dev);
    assert_eq!(row["before"]["name"], "old name");
    assert_eq!(row["after"]["name"], "new name");
    assert_eq!(row["request"]["name"], "new name");
    assert!(row["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    let del = audit_rows(&app, &admin, "route=/api/v1/vehicles/{id}&method=DELETE").await;
    assert_eq!(del[0]["before"]["vin"], "1HGBH41JXMN109186");
    assert_eq!(del[0]["status"], 204);
    let pu = audit_rows(&app, &admin, "route=/api/v1/users/{id}&method=PATCH").await;
    assert_eq!(pu[0]["before"]["name"], "");
    assert_eq!(pu[0]["after"]["name"], "Dee");
    let keys = audit_rows(&app, &admin, "route=/api/v1/api-keys").await;
    assert_eq!(keys[0]["after"]["secret"], "[redacted]");
    let users = audit_rows(&app, &admin, "route=/api/v1/users&status=201").await;
    assert_eq!(users[0]["request"]["password"], "[redacted]");
    let by_disp = audit_rows(&app, &admin, &format!("actor=u:{disp_id}")).await;
    assert!(
        by_disp
            .iter()
            .any(|r| r["status"] == 403 && r["route"] == "/api/v1/users"),
        "{by_disp:?}"
    );
    let logins = audit_rows(&app, &admin, "route=/api/v1/auth/*").await;
    assert!(
        logins
            .iter()
            .any(|r| r["status"] == 200 && r["after"]["access_token"] == "[redacted]"),
        "a successful login is attributed to its user: {logins:?}"
    );
    let by_key = audit_rows(&app, &admin, &format!("actor=k:{key_id}")).await;
    assert_eq!(by_key.len(), 1);
    // Time range and pagination.
    let future = audit_rows(&app, &admin, "from=2999-01-01T00:00:00Z").await;
    assert!(future.is_empty());
    let everything = audit_rows(&app, &admin, "limit=500").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".to_string(),
        };
        let r = app
            .call("GET", &format!("/api/v1/admin/audit?{q}"), Some(&admin), None)
            .await;
        for it in r.json["items"].as_array().unwrap() {
            seen.push(it["id"].as_i64().unwrap());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let ids: Vec<i64> = everything.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(seen, ids);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
    // Another tenant's admin sees none of it; a fleet manager may not read it at all.
    let theirs = audit_rows(&app, &other_admin, "limit=500").await;
    assert!(theirs.iter().all(|r| !ids.contains(&r["id"].as_i64().unwrap())));
    let fm = app.call("GET", "/api/v1/admin/audit", Some(&disp), None).await;
    assert_eq!(fm.status, StatusCode::FORBIDDEN);
    for bad in [
        "actor=x:1",
        "limit=0",
        "cursor=zzz",
        "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "bogus=1",
    ] {
        let r = app
            .call("GET", &format!("/api/v1/admin/audit?{bad}"), Some(&admin), None)
            .await;
        assert!(r.status.is_client_error(), "{bad}: {}", r.status);
    }
    let _ = ta;

    // Append-only, in the database itself.
    for sql in [
        "UPDATE audit_log SET status = 200",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "BEGIN; SET LOCAL clutch.audit_erase = 'on'; UPDATE audit_log SET status = 500; COMMIT",
    ] {
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(app.pool()).await;
        assert!(r.is_err(), "{sql} must be refused");
        let _ = sqlx::raw_sql("ROLLBACK").execute(app.pool()).await;
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(n >= everything.len() as i64);
}

#[tokio::test]
async fn csv_import_reports_bad_rows_by_number_and_applies_the_good_ones() {
    let app = app().await;
    let (_, admin) = app.tenant_user("Alpha", Role::FleetManager).await;
    let (_, other) = app.tenant_user("Beta", Role::Admin).await;
    let foreign = app
        .call(
            "POST",
            "/api/v1/vehicles",
            Some(&other),
            Some(json!({"name": "theirs", "vin": "WVWZZZ1JZXW000001"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();

    let vehicles = "name,vin,plate,year\n\
                    Van 1,1HGBH41JXMN109186,B-1,2020\n\
                    ,1HGBH41JXMN109187,B-2,2020\n\
                    Van 3,NOT-A-VIN,B-3,2020\n\
                    Van 4,1HGBH41JXMN109189,B-4,1800\n\
                    Van 5,1HGBH41JXMN109186,B-5,2021\n\
                    Van 6,,B-6,\n";
    let r = csv(&app, "/api/v1/admin/import/vehicles", &admin, vehicles).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["rows"], 6);
    assert_eq!(r.json["applied"], 2);
    let errs: Vec<(u64, String)> = r.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_u64().unwrap(), e["field"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        errs,
        vec![
            (2, "name".into()),
            (3, "vin".into()),
            (4, "year".into()),
            (5, "vin".into())
        ],
        "{}",
        r.text
    );
    assert_eq!(r.json["errors"][0]["line"], 3, "the file line, counting the header");
    let list = app.call("GET", "/api/v1/vehicles", Some(&admin), None).await;
    assert_eq!(list.json["items"].as_array().unwrap().len(), 2);

    // Devices: resolve vehicles by VIN (own tenant only), refuse unknown protocols and
    // duplicates; all-or-nothing applies nothing when one row is bad.
    let devices = "identifier,protocol,name,vehicle_vin\n\
                   356307042441013,teltonika,A,1HGBH41JXMN109186\n\
                   356307042441014,nosuchproto,B,\n\
                   356307042441015,gt06,C,WVWZZZ1JZXW000001\n\
                   \"bad id, quoted\",gt06,D,\n";
    let atomic = csv(&app, "/api/v1/admin/import/devices?atomic=true", &admin, devices).await;
    assert_eq!(atomic.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", atomic.text);
    assert_eq!(atomic.json["error"]["details"]["applied"], 0);
    assert_eq!(atomic.json["error"]["details"]["failed"], 3);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM devices")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(n, 0, "atomic: nothing applied");
    let per_row = csv(&app, "/api/v1/admin/import/devices", &admin, devices).await;
    assert_eq!(per_row.status, StatusCode::OK, "{}", per_row.text);
    assert_eq!(per_row.json["applied"], 1);
    let fields: Vec<&str> = per_row.json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["protocol", "vehicle_vin", "identifier"], "{}", per_row.text);
    let dev = &per_row.json["created"][0];
    assert_eq!(dev["row"], 1);
    let got = app
        .call("GET", &format!("/api/v1/devices/{}", dev["id"]), Some(&admin), None)
        .await;
    assert!(got.json["vehicle_id"].as_i64().is_some());
    // Importing the same file again: the good row is now a duplicate.
    let again = csv(
        &app,
        "/api/v1/admin/import/devices",
        &admin,
        "identifier,protocol\n356307042441013,teltonika\n",
    )
    .await;
    assert_eq!(again.json["errors"][0]["field"], "identifier");
    assert_eq!(again.json["errors"][0]["message"], "already registered");
    // A good atomic file applies all of it.
    let ok = csv(
        &app,
        "/api/v1/admin/import/devices?atomic=true",
        &admin,
        "identifier,protocol\n111111111111111,gt06\n222222222222222,h02\n",
    )
    .await;
    assert_eq!(
        (ok.status, ok.json["applied"].as_i64()),
        (StatusCode::OK, Some(2)),
        "{}",
        ok.text
    );

    // Whole-file problems.
    let r = csv(
        &app,
        "/api/v1/admin/import/devices",
        &admin,
        "identifier,protocol,tenant_id\n1,gt06,1\n",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = csv(&app, "/api/v1/admin/import/devices", &admin, "name\nx\n").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = app
        .call("POST", "/api/v1/admin/import/devices", Some(&admin), Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("identifier,protocol\n{}", "1,gt06\n".repeat(200_000));
    let r = csv(&app, "/api/v1/admin/import/devices", &admin, &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let many = format!("name\n{}", "v\n".repeat(api::admin::import::MAX_ROWS + 1));
    let r = csv(&app, "/api/v1/admin/import/vehicles", &admin, &many).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // Bulk: drivers to vehicles, vehicles to groups; foreign ids are row errors.
    let own_veh = list.json["items"][0]["id"].as_i64().unwrap();
    let drv = app
        .call("POST", "/api/v1/drivers", Some(&admin), Some(json!({"name": "Dana"})))
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let r = app
        .call(
            "POST",
            "/api/v1/admin/bulk/driver-assignments",
            Some(&admin),
            Some(json!({"assignments": [
                {"driver_id": drv, "vehicle_id": own_veh},
                {"driver_id": drv, "vehicle_id": foreign},
                {"driver_id": 999999, "vehicle_id": own_veh}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["applied"], 1);
    assert_eq!(r.json["errors"][0]["row"], 2);
    assert_eq!(r.json["errors"][0]["field"], "vehicle_id");
    assert_eq!(r.json["errors"][1]["field"], "driver_id");
    let g = app
        .call("POST", "/api/v1/groups", Some(&admin), Some(json!({"name": "North"})))
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let r = app
        .call(
            "POST",
            "/api/v1/admin/bulk/group-members",
            Some(&admin),
            Some(json!({"group_id": g, "vehicle_ids": [own_veh, foreign]})),
        )
        .await;
    assert_eq!(
        (r.json["applied"].as_i64(), r.json["failed"].as_i64()),
        (Some(1), Some(1)),
        "{}",
        r.text
    );
    let group = app
        .call("GET", &format!("/api/v1/groups/{g}"), Some(&admin), None)
        .await;
    assert_eq!(group.json["vehicle_ids"], json!([own_veh]));
    let r = app
        .call(
            "POST",
            "/api/v1/admin/bulk/group-members",
            Some(&admin),
            Some(json!({"group_id": g, "vehicle_ids": [own_veh], "mode": "remove"})),
        )
        .await;
    assert_eq!(r.json["applied"], 1);
    let r = app
        .call(
            "POST",
            "/api/v1/admin/bulk/group-members",
            Some(&admin),
            Some(json!({"group_id": g, "vehicle_ids": [], "mode": "swap"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The imports are in the audit trail, as a summary of the file.
    let (_, boss) = (0, {
        let t: i64 = sqlx::query_scalar("SELECT tenant_id FROM devices LIMIT 1")
            .fetch_one(app.pool())
            .await
            .unwrap();
        app.user(t, "boss@alpha.example.com", Role::Admin).await;
        app.login("boss@alpha.example.com").await
    });
    let rows = audit_rows(&app, &boss, "route=/api/v1/admin/import/*").await;
    assert!(rows.len() >= 5);
    assert!(
        rows.iter()
            .filter(|r| r["status"] == 200)
            .all(|r| r["request"]["content_type"] == "text/csv" && r["request"]["bytes"].as_u64() > Some(0)),
        "{rows:?}"
    );
}

/// Seeds `n` positions for one device, one a second from `start`, in one statement.
async fn seed_positions(app: &App, device: i64, start: &str, n: i64) {
    sqlx::query(
        "INSERT INTO positions (device_id, fix_time, server_time, lat, lon, speed_kmh, valid, attributes) \
         SELECT $1, $2::timestamptz + make_interval(secs => i), now(), 52 + i * 1e-6, 13, 40, true, '{\"k\": \"v,\\\"q\\\"\"}' \
         FROM generate_series(0, $3 - 1) AS i",
    )
    .bind(device)
    .bind(start)
    .bind(n)
    .execute(app.pool())
    .await
    .unwrap();
}

#[tokio::test]
async fn export_streams_a_large_set_in_bounded_chunks() {
    let app = app().await;
    let (t, admin) = app.tenant_user("Alpha", Role::Admin).await;
    let (_, other) = app.tenant_user("Beta", Role::Admin).await;
    let dev = ingest::registry::add_device(app.pool(), "Alpha", "356307042441013", protocols::Protocol::Teltonika)
        .await
        .unwrap();
    let dev_b = ingest::registry::add_device(app.pool(), "Beta", "861234567890123", protocols::Protocol::Gt06)
        .await
        .unwrap();
    let _ = t;
    const N: i64 = 200_000;
    seed_positions(&app, dev, "2026-01-01T00:00:00Z", N).await;
    seed_positions(&app, dev_b, "2026-01-01T00:00:00Z", 1_000).await;
    let range = "from=2026-01-01T00:00:00Z&to=2026-01-10T00:00:00Z";

    // CSV: read frame by frame, never holding the whole body.
    let resp = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/api/v1/admin/export/positions?{range}"))
                .header("authorization", format!("Bearer {admin}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(resp.headers().get("etag").is_none(), "a stream is not hashed whole");
    let mut body = resp.into_body();
    let (mut lines, mut frames, mut biggest, mut first) = (0usize, 0usize, 0usize, String::new());
    let mut tail = Vec::new();
    while let Some(f) = body.frame().await {
        let data = f.unwrap().into_data().unwrap();
        frames += 1;
        biggest = biggest.max(data.len());
        lines += data.iter().filter(|b| **b == b'\n').count();
        if first.is_empty() {
            first = String::from_utf8_lossy(&data[..200]).to_string();
        }
        tail = data.to_vec();
    }
    assert_eq!(lines as i64, N + 1, "header + every row, and only the tenant's");
    assert!(frames > 50, "streamed in chunks: {frames}");
    assert!(
        biggest <= api::admin::export::CHUNK + 4096,
        "no chunk much larger than CHUNK: {biggest}"
    );
    assert!(first.starts_with("device_id,vehicle_id,fix_time,"), "{first}");
    let last = String::from_utf8_lossy(&tail);
    assert!(last.contains(&format!("{dev},")), "{last}");
    assert!(
        last.contains("\"{\"\"k\"\":\"\"v,\\\"\"q\\\"\"\"\"}\""),
        "JSON in CSV quoted: {last}"
    );

    // NDJSON, narrowed to a device: each line one JSON object.
    let r = app
        .call(
            "GET",
            &format!("/api/v1/admin/export/positions?from=2026-01-01T00:00:00Z&to=2026-01-01T00:16:40Z&format=ndjson&device_id={dev}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let objs: Vec<Value> = r.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objs.len(), 1000);
    assert_eq!(objs[0]["device_id"], dev);
    assert!(objs[0]["fix_time"].as_str().unwrap().starts_with("2026-01-01T00:00:00"));

    // Events and trips.
    sqlx::query("INSERT INTO events (device_id, time, kind, severity) VALUES ($1, '2026-01-02T00:00:00Z', '=overspeed', 'high')")
        .bind(dev)
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO trips (device_id, start_time, end_time, distance_m) VALUES ($1, '2026-01-02T00:00:00Z', '2026-01-02T01:00:00Z', 1234.5)")
        .bind(dev)
        .execute(app.pool())
        .await
        .unwrap();
    let ev = app
        .call(
            "GET",
            &format!("/api/v1/admin/export/events?{range}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ev.text.lines().count(), 2, "{}", ev.text);
    assert!(ev.text.contains("\"'=overspeed\""), "formula guarded: {}", ev.text);
    let tr = app
        .call(
            "GET",
            &format!("/api/v1/admin/export/trips?{range}&format=ndjson"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(tr.text.trim()).unwrap()["distance_m"],
        1234.5
    );

    // Errors: unknown kind, bad format, bad range, someone else's device, non-admin.
    for (url, code) in [
        (format!("/api/v1/admin/export/users?{range}"), StatusCode::NOT_FOUND),
        (
            format!("/api/v1/admin/export/positions?{range}&format=xml"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/admin/export/positions?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/admin/export/positions?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            format!("/api/v1/admin/export/positions?{range}&device_id={dev_b}"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = app.call("GET", &url, Some(&admin), None).await;
        assert_eq!(r.status, code, "{url}: {}", r.text);
    }
    let theirs = app
        .call(
            "GET",
            &format!("/api/v1/admin/export/positions?{range}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(theirs.text.lines().count(), 1001, "B exports B's rows only");

    // Per-caller concurrency: two open exports hold the budget, a third is refused; once
    // the clients go away the budget is back.
    let open = |tok: String| {
        let router = app.router.clone();
        async move {
            router
                .oneshot(
                    Request::get(format!("/api/v1/admin/export/positions?{range}"))
                        .header("authorization", format!("Bearer {tok}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap()
        }
    };
    let a1 = open(admin.clone()).await;
    let a2 = open(admin.clone()).await;
    let a3 = open(admin.clone()).await;
    assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a3.status(), StatusCode::TOO_MANY_REQUESTS);
    drop((a1, a2, a3));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = open(admin.clone()).await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "export budget not returned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_reports_pipeline_and_database() {
    let db_app = app().await;
    let metrics = ingest::metrics::install();
    let writer = store::Writer::spawn(db_app.pool().clone(), store::WriterConfig::default());
    let state = api::AppState::new(
        db_app.pool().clone(),
        config(),
        SECRET,
        Some(db_app.bus.clone() as api::DeviceBus),
    )
    .with_system(api::admin::SystemProbe::new(Some(metrics), Some(writer.clone())));
    let router = api::router(state);
    let (_, admin) = db_app.tenant_user("Alpha", Role::Admin).await;
    let (_, fm) = db_app.tenant_user("Beta", Role::FleetManager).await;
    let dev = ingest::registry::add_device(
        db_app.pool(),
        "Alpha",
        "356307042441013",
        protocols::Protocol::Teltonika,
    )
    .await
    .unwrap();
    let get = |tok: String| {
        let router = router.clone();
        async move {
            let resp = router
                .oneshot(
                    Request::get("/api/v1/admin/health")
                        .header("authorization", format!("Bearer {tok}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null))
        }
    };
    let (s, h0) = get(admin.clone()).await;
    assert_eq!(s, StatusCode::OK, "{h0}");
    metrics::counter!(ingest::metrics::POSITIONS, "protocol" => "teltonika").increment(500);
    let mut pos = common::pos(dev, 0, 52.0, 13.0);
    pos.server_time = chrono::Utc::now();
    writer.submit(vec![pos]).await.unwrap().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, h) = get(admin.clone()).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert!(h["ingest"]["positions_total"].as_f64().unwrap() >= 500.0, "{h}");
    assert!(h["ingest"]["positions_per_s"].as_f64().unwrap() > 0.0, "{h}");
    assert_eq!(h["ingest"]["devices_reporting_5m"], 1);
    assert!(h["ingest"]["connected_devices"].is_number(), "{h}");
    assert_eq!(h["bus"]["attached"], true);
    assert!(h["bus"]["depth"].is_number());
    assert_eq!(h["writer"]["rows_committed"], 1);
    assert!(h["writer"]["rows_per_s"].as_f64().unwrap() > 0.0, "{h}");
    assert!(h["writer"]["queued_batches"].is_number());
    assert!(h["writer"]["newest_fix_age_s"].as_f64().unwrap() < 60.0);
    assert_eq!(h["database"]["reachable"], true);
    assert!(h["database"]["size_bytes"].as_i64().unwrap() > 1_000_000);
    assert!(h["database"]["positions_bytes"].as_i64().unwrap() > 0);
    assert!(h["database"]["storage_mode"].is_string());
    let (s, _) = get(fm).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Without a probe the endpoint still answers with what the database and bus know.
    let plain = db_app.call("GET", "/api/v1/admin/health", Some(&admin), None).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.json["writer"]["queued_batches"].is_null());
    assert_eq!(plain.json["database"]["reachable"], true);
    writer.shutdown().await;
}

/// Sum and count of ledger entries per account: what an erasure must leave alone.
async fn ledger_snapshot(app: &App) -> Vec<(i64, String, i64)> {
    sqlx::query_as("SELECT account_id, sum(amount)::text, count(*) FROM ledger_entries GROUP BY account_id ORDER BY 1")
        .fetch_all(app.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn privacy_export_erase_and_consent_over_http() {
    let app = app().await;
    let (t, admin) = app.tenant_user("Alpha", Role::Admin).await;
    let (_, other) = app.tenant_user("Beta", Role::Admin).await;
    let fm_email = "fm@alpha.example.com";
    app.user(t, fm_email, Role::FleetManager).await;
    let fm = app.login(fm_email).await;
    let drv = app
        .call(
            "POST",
            "/api/v1/drivers",
            Some(&admin),
            Some(json!({"name": "Erika Mustermann", "email": "erika@example.com", "phone": "+49 170 1234567", "external_id": "CARD-77"})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    app.call(
        "PATCH",
        &format!("/api/v1/drivers/{drv}"),
        Some(&admin),
        Some(json!({"phone": "+49 170 7654321"})),
    )
    .await;
    let dev = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&admin),
            Some(json!({"identifier": "356307042441013", "protocol": "teltonika", "driver_id": drv})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    seed_positions(&app, dev, "2026-01-05T10:00:00Z", 100).await;
    seed_positions(&app, dev, "2026-01-05T18:00:00Z", 50).await; // outside any trip
    sqlx::query("INSERT INTO trips (device_id, start_time, end_time, driver_id) VALUES ($1, '2026-01-05T10:00:00Z', '2026-01-05T10:01:39Z', $2)")
        .bind(dev)
        .bind(drv)
        .execute(app.pool())
        .await
        .unwrap();
    // Money that must not move.
    let gw = services::gateway::SandboxGateway::new();
    services::payments::top_up(
        app.pool(),
        &gw,
        services::payments::Payer::User(1),
        "EUR",
        10_000,
        "tok",
        "k1",
    )
    .await
    .unwrap();
    services::payments::wallet_debit(app.pool(), services::payments::Payer::User(1), "EUR", 2_500, "fee")
        .await
        .unwrap();

    // Consent: default, invalid, set, read, and who may.
    let c = app
        .call("GET", &format!("/api/v1/drivers/{drv}/consent"), Some(&fm), None)
        .await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(
        (c.json["recorded"].as_bool(), c.json["track_outside_hours"].as_bool()),
        (Some(false), Some(true))
    );
    let url = format!("/api/v1/drivers/{drv}/consent");
    for bad in [
        json!({"track_outside_hours": false, "time_zone": "Mars/Olympus"}),
        json!({"track_outside_hours": false, "working_hours": {"mon": [["9", "17"]]}}),
        json!({"track_outside_hours": false, "tenant_id": 2}),
    ] {
        let r = app.call("PUT", &url, Some(&admin), Some(bad.clone())).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", r.text);
    }
    let good = json!({"track_outside_hours": false, "time_zone": "Europe/Berlin", "working_hours": {"mon": [["08:00", "17:00"]]}});
    assert_eq!(
        app.call("PUT", &url, Some(&fm), Some(good.clone())).await.status,
        StatusCode::FORBIDDEN
    );
    let r = app.call("PUT", &url, Some(&admin), Some(good)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["recorded"], true);
    assert_eq!(r.json["time_zone"], "Europe/Berlin");
    assert_eq!(
        app.call("GET", &url, Some(&other), None).await.status,
        StatusCode::NOT_FOUND
    );
    let before_put = audit_rows(&app, &admin, "route=/api/v1/drivers/{id}/consent").await;
    assert_eq!(before_put[0]["before"]["recorded"], false);

    // Export: everything about the driver, only theirs.
    let ex = app
        .call(
            "GET",
            &format!("/api/v1/admin/privacy/drivers/{drv}/export"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(ex.status, StatusCode::OK, "{}", ex.text);
    assert_eq!(ex.json["driver"]["email"], "erika@example.com");
    assert_eq!(ex.json["consent"]["time_zone"], "Europe/Berlin");
    assert_eq!(ex.json["trips"].as_array().unwrap().len(), 1);
    assert_eq!(ex.json["positions_during_trips"].as_array().unwrap().len(), 100);
    assert!(ex.json["audit"].as_array().unwrap().len() >= 3, "{}", ex.json["audit"]);
    assert_eq!(
        app.call(
            "GET",
            &format!("/api/v1/admin/privacy/drivers/{drv}/export"),
            Some(&other),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(
            "GET",
            &format!("/api/v1/admin/privacy/drivers/{drv}/export"),
            Some(&fm),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );

    // Erase: 404 elsewhere; then personal data gone, money and the trail's shape kept.
    let erase = format!("/api/v1/admin/privacy/drivers/{drv}/erase");
    assert_eq!(
        app.call("POST", &erase, Some(&other), None).await.status,
        StatusCode::NOT_FOUND
    );
    let ledger_before = ledger_snapshot(&app).await;
    assert!(!ledger_before.is_empty());
    let trail_before: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let r = app.call("POST", &erase, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["positions"], 100);
    assert_eq!(r.json["trips"], 1);
    assert!(r.json["audit_rows"].as_u64().unwrap() >= 3);
    let pseudonym = r.json["pseudonym"].as_str().unwrap().to_string();
    assert_eq!(ledger_snapshot(&app).await, ledger_before, "ledger untouched");
    let tb = services::ledger::trial_balance(app.pool()).await.unwrap();
    assert!(tb.values().all(|v| *v == 0));
    let d = app
        .call("GET", &format!("/api/v1/drivers/{drv}"), Some(&admin), None)
        .await;
    assert_eq!(d.json["name"], pseudonym);
    assert!(d.json["email"].is_null() && d.json["phone"].is_null());
    let all: String = sqlx::query_scalar("SELECT string_agg(to_jsonb(a)::text, E'\\n') FROM audit_log a")
        .fetch_one(app.pool())
        .await
        .unwrap();
    for personal in ["Erika", "erika@example.com", "1234567", "7654321", "CARD-77"] {
        assert!(!all.contains(personal), "{personal} still in the audit trail");
    }
    let trail_after: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(trail_after, trail_before + 1, "rows kept, plus the erasure's own");
    let last = audit_rows(&app, &admin, "route=/api/v1/admin/privacy/drivers/{id}/erase").await;
    assert_eq!(last[0]["status"], 200);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM positions WHERE device_id = $1")
        .bind(dev)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(left, 50, "only the fixes of the driver's trips were the driver's");
    // Consent went with the erasure; delete is idempotent and audited.
    let c = app.call("GET", &url, Some(&admin), None).await;
    assert_eq!(c.json["recorded"], false);
    assert_eq!(
        app.call("DELETE", &url, Some(&admin), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call("DELETE", &url, Some(&other), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn live_stream_hides_a_non_consenting_drivers_off_hours_positions_from_a_fleet_manager() {
    let app = app().await;
    let (t, fm) = app.tenant_user("Alpha", Role::FleetManager).await;
    app.user(t, "boss@alpha.example.com", Role::Admin).await;
    let admin = app.login("boss@alpha.example.com").await;
    let drv = app
        .call("POST", "/api/v1/drivers", Some(&admin), Some(json!({"name": "D"})))
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    let dev = app
        .call(
            "POST",
            "/api/v1/devices",
            Some(&admin),
            Some(json!({"identifier": "356307042441013", "protocol": "teltonika", "driver_id": drv})),
        )
        .await
        .json["id"]
        .as_i64()
        .unwrap();
    // common::pos times are Monday 2026-09-21 from 14:13:20 UTC = 16:13:20 in Berlin.
    let r = app
        .call(
            "PUT",
            &format!("/api/v1/drivers/{drv}/consent"),
            Some(&admin),
            Some(json!({"track_outside_hours": false, "time_zone": "Europe/Berlin",
                        "working_hours": {"mon": [["08:00", "16:15"]]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

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
    let connect = |tok: &str| {
        let url = format!("ws://{addr}/api/v1/stream?access_token={tok}&kinds=positions");
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };
    let mut ws_fm = connect(&fm).await;
    let mut ws_admin = connect(&admin).await;
    // 16:13:20 + 0..200 s: until 16:15:00 inside the hours (100 fixes), after it outside.
    let batch: Vec<_> = (0..200).map(|s| common::pos(dev, s, 52.0, 13.0)).collect();
    app.publish(ingest::DeviceBatch {
        device_id: dev,
        positions: batch,
        events: vec![],
    })
    .await;
    let seen_fm = drain(&mut ws_fm).await;
    let seen_admin = drain(&mut ws_admin).await;
    assert_eq!(seen_admin.len(), 200, "admins see everything");
    assert_eq!(
        seen_fm.len(),
        100,
        "the fleet manager sees the working-hours fixes only"
    );
    // The same answer as the REST reads' SQL rule, fix by fix.
    let visible: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM generate_series(0, 199) AS s \
         WHERE clutch_position_visible($1, to_timestamp(1790000000 + s))",
    )
    .bind(dev)
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(visible, 100);
    server.abort();
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The messages a socket gets until it has been quiet for a while.
async fn drain(ws: &mut Ws) -> Vec<Value> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(700), ws.next()).await {
        out.push(serde_json::from_str(m.to_text().unwrap()).unwrap());
    }
    out
}

#[test]
fn consent_rule_matches_the_sql_semantics() {
    use api::live::ConsentRule;
    let hours = json!({"mon": [["08:00", "12:00"], ["13:00", "17:30"]], "sat": [["00:00", "23:59"]]});
    let r = ConsentRule::new("Europe/Berlin", &hours);
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    assert!(r.visible(at("2026-09-21T06:00:00Z"))); // Mon 08:00 CEST
    assert!(!r.visible(at("2026-09-21T05:59:59Z")));
    assert!(!r.visible(at("2026-09-21T10:30:00Z"))); // lunch
    assert!(!r.visible(at("2026-09-21T15:30:00Z"))); // 17:30 is the end, exclusive
    assert!(!r.visible(at("2026-09-22T08:00:00Z"))); // Tuesday: no hours
    assert!(r.visible(at("2026-09-26T12:00:00Z"))); // Saturday
    assert!(!ConsentRule::new("Nowhere/Else", &hours).visible(at("2026-09-21T08:00:00Z")));
}
