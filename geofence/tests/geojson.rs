//! GeoJSON in and out: every shape round-trips with its rules, and bad input is refused
//! with an error that names the fence and the problem.

use geofence::{FenceError, FenceId, FenceIndex, fences_from_geojson, fences_to_geojson};

const COLLECTION: &str = r#"{
  "type": "FeatureCollection",
  "features": [
    { "type": "Feature", "id": 1,
      "properties": { "name": "Depot", "colour": "red",
                      "rules": { "enter_dwell_s": 30, "hysteresis_m": 25, "dwell_alert_s": 600,
                                 "applies_to": { "groups": [3, 1] } } },
      "geometry": { "type": "Polygon", "coordinates": [
        [[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.1], [13.0, 52.0]],
        [[13.04, 52.04], [13.06, 52.04], [13.06, 52.06], [13.04, 52.06], [13.04, 52.04]] ] } },
    { "type": "Feature", "id": "2",
      "properties": { "rules": { "time_windows": [
          { "days": ["Sat", "Sun"], "start": "22:00:00", "end": "06:00:00", "utc_offset_min": 60 } ] } },
      "geometry": { "type": "MultiPolygon", "coordinates": [
        [[[14.0, 50.0], [14.1, 50.0], [14.1, 50.1], [14.0, 50.0]]],
        [[[15.0, 50.0], [15.1, 50.0], [15.1, 50.1], [15.0, 50.0]]] ] } },
    { "type": "Feature", "id": 3,
      "properties": { "radius_m": 250, "rules": { "speed_limit": { "limit_kmh": 30, "min_duration_s": 15 } } },
      "geometry": { "type": "Point", "coordinates": [2.35, 48.85] } },
    { "type": "Feature", "id": 4,
      "properties": { "width_m": 40 },
      "geometry": { "type": "LineString", "coordinates": [[179.9, -17.0], [-179.9, -17.1], [-179.8, -17.0]] } }
  ]
}"#;

#[test]
fn round_trip() {
    let fences = fences_from_geojson(COLLECTION).unwrap();
    assert_eq!(fences.len(), 4);
    assert_eq!(fences[0].name(), Some("Depot"));
    assert_eq!(fences[0].rules().enter_dwell_s, 30);
    // Scope lists come out sorted.
    assert_eq!(
        fences[0].rules().applies_to.groups,
        vec![geofence::GroupId(1), geofence::GroupId(3)]
    );
    assert_eq!(fences[1].id(), FenceId(2));
    assert_eq!(fences[2].rules().speed_limit.as_ref().unwrap().limit_kmh, 30.0);

    let text = fences_to_geojson(&fences);
    let again = fences_from_geojson(&text).unwrap();
    assert_eq!(again.len(), fences.len());
    for (a, b) in fences.iter().zip(&again) {
        assert_eq!(a.id(), b.id());
        assert_eq!(a.name(), b.name());
        assert_eq!(a.shape(), b.shape());
        assert_eq!(a.rules(), b.rules());
    }
    // And the text is stable from then on.
    assert_eq!(fences_to_geojson(&again), text);

    let index = FenceIndex::build(again).unwrap();
    assert_eq!(index.containing(13.02, 52.02), vec![FenceId(1)]);
    assert!(index.containing(13.05, 52.05).is_empty(), "in the hole");
    assert_eq!(index.containing(15.09, 50.01), vec![FenceId(2)]);
    assert_eq!(index.containing(2.351, 48.851), vec![FenceId(3)]);
    // On the corridor, east of the antimeridian.
    assert_eq!(index.containing(-179.95, -17.075), vec![FenceId(4)]);
}

fn err(json: &str) -> FenceError {
    fences_from_geojson(json).unwrap_err()
}

fn feature(id: &str, props: &str, geometry: &str) -> String {
    format!(r#"{{"type":"Feature","id":{id},"properties":{props},"geometry":{geometry}}}"#)
}

const SQUARE: &str = r#"{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]}"#;

#[test]
fn refusals() {
    assert!(matches!(err("not json"), FenceError::GeoJson(_)));
    assert!(matches!(err(SQUARE), FenceError::GeoJson(m) if m.contains("bare geometry")));
    assert!(matches!(err(&feature("-1", "{}", SQUARE)), FenceError::GeoJson(m) if m.contains("id")));
    assert!(matches!(err(&feature("\"abc\"", "{}", SQUARE)), FenceError::GeoJson(_)));
    let point = r#"{"type":"Point","coordinates":[0,0]}"#;
    assert!(matches!(err(&feature("1", "{}", point)), FenceError::GeoJson(m) if m.contains("radius_m")));
    let mp = r#"{"type":"MultiPoint","coordinates":[[0,0]]}"#;
    assert!(matches!(err(&feature("1", "{}", mp)), FenceError::GeoJson(m) if m.contains("MultiPoint")));

    // Unknown rule keys are refused, and the error names the fence.
    let e = err(&feature("7", r#"{"rules":{"hysterisis_m":5}}"#, SQUARE));
    assert!(matches!(&e, FenceError::InFence { id: FenceId(7), source } if matches!(**source, FenceError::Rule(_))));
    assert!(e.to_string().contains("fence 7"), "{e}");

    let bowtie = r#"{"type":"Polygon","coordinates":[[[0,0],[1,1],[1,0],[0,1],[0,0]]]}"#;
    let e = err(&feature("8", "{}", bowtie));
    assert!(
        matches!(&e, FenceError::InFence { id: FenceId(8), source } if matches!(**source, FenceError::SelfIntersection { .. })),
        "{e:?}"
    );
    println!("{e}");

    let far = r#"{"type":"Point","coordinates":[0,0]}"#;
    let e = err(&feature("9", r#"{"radius_m": 1e7}"#, far));
    assert!(e.to_string().contains("radius"), "{e}");

    let lonely = r#"{"type":"Polygon","coordinates":[[[0,0]]]}"#;
    assert!(matches!(
        err(&feature("10", "{}", lonely)),
        FenceError::InFence { source, .. } if matches!(*source, FenceError::TooFewPoints { .. })
    ));

    let short_pos = r#"{"type":"Polygon","coordinates":[[[0],[1,0],[1,1],[0,0]]]}"#;
    assert!(matches!(err(&feature("11", "{}", short_pos)), FenceError::GeoJson(_)));

    let two = format!(
        r#"{{"type":"FeatureCollection","features":[{},{}]}}"#,
        feature("1", "{}", SQUARE),
        feature("1", "{}", SQUARE)
    );
    let fences = fences_from_geojson(&two).unwrap();
    assert_eq!(
        FenceIndex::build(fences).unwrap_err(),
        FenceError::DuplicateId(FenceId(1))
    );
}
