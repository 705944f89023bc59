//! Fences from the `geofences` table, one [`FenceIndex`] per tenant (a fence applies
//! only to its tenant's devices), reloaded whenever the table changes.
//!
//! A row's `geojson` is a GeoJSON geometry or Feature. The fence is the Feature with the
//! row's id; its properties are the Feature's own merged with the row's `attributes`
//! (attributes win): `radius_m` for a Point, `width_m` for a LineString, and `rules`, the
//! `geofence::FenceRules` (enter/exit confirmation, hysteresis, `dwell_alert_s`,
//! `speed_limit`, time windows, device scope). A row that does not make a valid fence is
//! skipped with a warning; it does not stop the others.

use std::collections::HashMap;

use geofence::FenceIndex;
use serde_json::Value;
use sqlx::PgPool;

/// Every tenant's fences.
#[derive(Debug, Default)]
pub struct FenceSet {
    by_tenant: HashMap<i64, FenceIndex>,
    /// Fences that failed validation: (id, reason).
    pub rejected: Vec<(i64, String)>,
    pub count: usize,
}

impl FenceSet {
    pub fn for_tenant(&self, tenant: i64) -> Option<&FenceIndex> {
        self.by_tenant.get(&tenant)
    }

    /// Builds the set from `(id, tenant_id, name, geojson, attributes)` rows.
    pub fn build(rows: impl IntoIterator<Item = (i64, i64, String, Value, Value)>) -> FenceSet {
        let mut per: HashMap<i64, Vec<geofence::Fence>> = HashMap::new();
        let mut rejected = Vec::new();
        for (id, tenant, name, gj, attrs) in rows {
            match fence_of_row(id, &name, gj, attrs) {
                Ok(f) => per.entry(tenant).or_default().push(f),
                Err(e) => {
                    tracing::warn!(fence = id, error = %e, "geofence skipped: not a valid fence");
                    rejected.push((id, e));
                }
            }
        }
        let mut by_tenant = HashMap::new();
        let mut count = 0;
        for (tenant, fences) in per {
            let n = fences.len();
            match FenceIndex::build(fences) {
                Ok(ix) => {
                    count += n;
                    by_tenant.insert(tenant, ix);
                }
                Err(e) => {
                    tracing::warn!(tenant, error = %e, "tenant's geofences skipped");
                }
            }
        }
        FenceSet {
            by_tenant,
            rejected,
            count,
        }
    }

    pub async fn load(pool: &PgPool) -> Result<FenceSet, sqlx::Error> {
        let rows: Vec<(i64, i64, String, Value, Value)> =
            sqlx::query_as("SELECT id, tenant_id, name, geojson, attributes FROM geofences ORDER BY id")
                .fetch_all(pool)
                .await?;
        Ok(FenceSet::build(rows))
    }
}

fn fence_of_row(id: i64, name: &str, gj: Value, attrs: Value) -> Result<geofence::Fence, String> {
    let Value::Object(mut obj) = gj else {
        return Err("geojson is not an object".into());
    };
    let mut props = match obj.get("type").and_then(Value::as_str) {
        Some("Feature") => match obj.remove("properties") {
            Some(Value::Object(p)) => p,
            _ => serde_json::Map::new(),
        },
        _ => serde_json::Map::new(),
    };
    let geometry = match obj.get("type").and_then(Value::as_str) {
        Some("Feature") => obj.remove("geometry").unwrap_or(Value::Null),
        _ => Value::Object(obj),
    };
    if let Value::Object(a) = attrs {
        props.extend(a);
    }
    props.entry("name").or_insert_with(|| Value::String(name.to_owned()));
    let feature = serde_json::json!({
        "type": "Feature",
        "id": id,
        "geometry": geometry,
        "properties": props,
    });
    let f: geojson::Feature = serde_json::from_value(feature).map_err(|e| e.to_string())?;
    geofence::fence_from_feature(&f).map_err(|e| e.to_string())
}
