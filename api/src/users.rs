//! Auth endpoints, the caller's own account, tenants, users and API keys.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{self, Role, TokenPair};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::resources::{ListQuery, Page, page};
use crate::sqlf;
use crate::{AppState, Ctx};

// ---------------------------------------------------------------- auth

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// The current TOTP code, required once two-factor is enabled.
    pub totp: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LoginRow {
    id: i64,
    tenant_id: i64,
    password_hash: String,
    totp_secret: Option<String>,
    disabled: bool,
    failed_logins: i32,
    locked_until: Option<DateTime<Utc>>,
}

async fn issue_pair(state: &AppState, user_id: i64, tenant_id: i64, family: Option<String>) -> ApiResult<TokenPair> {
    let refresh = format!("rt_{}", auth::random_token());
    let family = family.unwrap_or_else(|| hex::encode(&auth::sha256(&auth::random_token())[..16]));
    sqlx::query("INSERT INTO refresh_tokens (user_id, family, token_hash, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(user_id)
        .bind(&family)
        .bind(auth::sha256(&refresh))
        .bind(auth::expires(state.config.refresh_ttl_s))
        .execute(&state.pool)
        .await?;
    let ttl = Duration::seconds(state.config.access_ttl_s as i64);
    Ok(TokenPair {
        access_token: state.keys.issue(user_id, tenant_id, ttl),
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: ttl.num_seconds(),
    })
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid email or password")
}

/// Log in with email and password (and TOTP code when enabled).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn login(State(state): State<AppState>, ApiJson(req): ApiJson<LoginRequest>) -> ApiResult<Json<TokenPair>> {
    if req.password.len() > 256 || req.email.len() > 320 {
        return Err(invalid_credentials());
    }
    let row: Option<LoginRow> = sqlx::query_as(
        "SELECT id, tenant_id, password_hash, totp_secret, disabled, failed_logins, locked_until \
         FROM users WHERE lower(email) = lower($1)",
    )
    .bind(req.email.trim())
    .fetch_optional(&state.pool)
    .await?;
    let Some(row) = row else {
        let pw = req.password.clone();
        let _ = tokio::task::spawn_blocking(move || auth::dummy_verify(&pw)).await;
        return Err(invalid_credentials());
    };
    if let Some(until) = row.locked_until
        && until > Utc::now()
    {
        let secs = (until - Utc::now()).num_seconds().max(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "locked",
            format!("too many failed attempts; retry in {secs} s"),
        );
        e.details = serde_json::json!({ "retry_after_s": secs });
        return Err(e);
    }
    let (pw, hash) = (req.password.clone(), row.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || auth::verify_secret(&pw, &hash))
        .await
        .map_err(|_| ApiError::internal())?;
    let totp_ok = match (&row.totp_secret, &req.totp) {
        (None, _) => true,
        (Some(s), Some(code)) => auth::totp_check(s, code),
        (Some(_), None) if ok => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "this account needs a TOTP code",
            ));
        }
        (Some(_), None) => false,
    };
    if !ok || !totp_ok || row.disabled {
        let failures = row.failed_logins + 1;
        let locked = auth::lockout_delay(failures, state.config.lockout_threshold).map(|d| Utc::now() + d);
        sqlx::query("UPDATE users SET failed_logins = $2, locked_until = $3 WHERE id = $1")
            .bind(row.id)
            .bind(failures)
            .bind(locked)
            .execute(&state.pool)
            .await?;
        return Err(invalid_credentials());
    }
    sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
        .bind(row.id)
        .execute(&state.pool)
        .await?;
    Ok(Json(issue_pair(&state, row.id, row.tenant_id, None).await?))
}

use axum::Json;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Trade a refresh token for a new pair. The old one is spent; presenting a spent token
/// again revokes every token descended from the same login.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenPair>> {
    let mut tx = state.pool.begin().await?;
    let row: Option<RefreshRow> = sqlx::query_as(
        "SELECT r.id, r.user_id, r.family, r.expires_at, r.rotated_at, r.revoked_at, u.tenant_id, u.disabled \
             FROM refresh_tokens r JOIN users u ON u.id = r.user_id WHERE r.token_hash = $1 FOR UPDATE OF r",
    )
    .bind(auth::sha256(&req.refresh_token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, user_id, family, expires_at, rotated, revoked, tenant_id, disabled)) = row else {
        return Err(ApiError::unauthorized("invalid refresh token"));
    };
    if rotated.is_some() || revoked.is_some() {
        if revoked.is_none() {
            tracing::warn!(user_id, "refresh token reused: revoking its family");
        }
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL")
            .bind(&family)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Err(ApiError::unauthorized("refresh token already used or revoked"));
    }
    if expires_at <= Utc::now() || disabled {
        return Err(ApiError::unauthorized("refresh token expired"));
    }
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(issue_pair(&state, user_id, tenant_id, Some(family)).await?))
}

/// Revoke the refresh token's whole login (the access token lapses on its own).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204), (status = 422, body = crate::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, ApiJson(req): ApiJson<RefreshRequest>) -> ApiResult<StatusCode> {
    // Unknown tokens answer the same, so logout is not an oracle for valid tokens.
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family = \
         (SELECT family FROM refresh_tokens WHERE token_hash = $1)",
    )
    .bind(auth::sha256(&req.refresh_token))
    .execute(&state.pool)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- me

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    #[schema(value_type = Role)]
    pub role: String,
    pub totp_enabled: bool,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

const USER_COLS: &str = "id, email, name, role, totp_secret IS NOT NULL AS totp_enabled, disabled, created_at";

async fn get_user(state: &AppState, ctx: &Ctx, id: i64) -> ApiResult<User> {
    sqlx::query_as(sqlf!("SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND id = $2"))
        .bind(ctx.tenant_id)
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", responses((status = 200, body = User)))]
pub async fn me(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<User>> {
    Ok(Json(get_user(&state, &ctx, ctx.user_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// Change the password (the current one is required); every refresh token is revoked.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", request_body = ChangePassword,
    responses((status = 204), (status = 401, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<ChangePassword>,
) -> ApiResult<StatusCode> {
    auth::check_password_policy(&req.new_password)?;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1 AND tenant_id = $2")
        .bind(ctx.user_id)
        .bind(ctx.tenant_id)
        .fetch_one(&state.pool)
        .await?;
    let (cur, new) = (req.current_password, req.new_password);
    let new_hash =
        tokio::task::spawn_blocking(move || auth::verify_secret(&cur, &hash).then(|| auth::hash_secret(&new)))
            .await
            .map_err(|_| ApiError::internal())?
            .ok_or_else(|| ApiError::unauthorized("current password is wrong"))?;
    let mut tx = state.pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(ctx.user_id)
        .bind(new_hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(ctx.user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetup {
    /// Base32 secret, shown once.
    pub secret: String,
    pub otpauth_url: String,
}

/// Start two-factor setup: a new secret, active once confirmed with a code.
#[utoipa::path(post, path = "/api/v1/me/totp", tag = "me", responses((status = 200, body = TotpSetup)))]
pub async fn totp_setup(State(state): State<AppState>, ctx: Ctx) -> ApiResult<Json<TotpSetup>> {
    let secret = auth::new_totp_secret();
    let email: String =
        sqlx::query_scalar("UPDATE users SET totp_pending = $2 WHERE id = $1 AND tenant_id = $3 RETURNING email")
            .bind(ctx.user_id)
            .bind(&secret)
            .bind(ctx.tenant_id)
            .fetch_one(&state.pool)
            .await?;
    let otpauth_url =
        format!("otpauth://totp/Clutch:{email}?secret={secret}&issuer=Clutch&algorithm=SHA1&digits=6&period=30");
    Ok(Json(TotpSetup { secret, otpauth_url }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirm {
    pub code: String,
}

/// Confirm two-factor setup with a current code.
#[utoipa::path(post, path = "/api/v1/me/totp/confirm", tag = "me", request_body = TotpConfirm,
    responses((status = 204), (status = 422, body = crate::error::ErrorBody)))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<TotpConfirm>,
) -> ApiResult<StatusCode> {
    let pending: Option<String> = sqlx::query_scalar("SELECT totp_pending FROM users WHERE id = $1")
        .bind(ctx.user_id)
        .fetch_one(&state.pool)
        .await?;
    let pending = pending.ok_or_else(|| ApiError::validation("code", "no two-factor setup in progress"))?;
    if !auth::totp_check(&pending, &req.code) {
        return Err(ApiError::validation("code", "wrong code"));
    }
    sqlx::query("UPDATE users SET totp_secret = totp_pending, totp_pending = NULL WHERE id = $1")
        .bind(ctx.user_id)
        .execute(&state.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- tenants

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Tenants visible to the caller: their own.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(ListQuery),
    responses((status = 200, body = Page<Tenant>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Tenant>>> {
    let rows: Vec<Tenant> = sqlx::query_as("SELECT id, name, settings, created_at FROM tenants WHERE id = $1")
        .bind(ctx.tenant_id)
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(page(rows, &q, &state, |t| t.id)?))
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = i64, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get_tenant(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<Tenant>> {
    if id != ctx.tenant_id {
        return Err(ApiError::not_found());
    }
    Ok(Json(
        sqlx::query_as("SELECT id, name, settings, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_one(&state.pool)
            .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    /// Replaces the settings object (score weights, thresholds).
    pub settings: Option<serde_json::Value>,
}

#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = i64, Path)),
    request_body = TenantPatch, responses((status = 200, body = Tenant), (status = 404, body = crate::error::ErrorBody)))]
pub async fn patch_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<TenantPatch>,
) -> ApiResult<Json<Tenant>> {
    if id != ctx.tenant_id {
        return Err(ApiError::not_found());
    }
    if let Some(n) = &p.name {
        crate::resources::check_name("name", n)?;
    }
    if let Some(s) = &p.settings
        && !s.is_object()
    {
        return Err(ApiError::validation("settings", "must be an object"));
    }
    if let Some(s) = &p.settings {
        crate::resources::check_json("settings", s)?;
    }
    Ok(Json(
        sqlx::query_as(
            "UPDATE tenants SET name = coalesce($2, name), settings = coalesce($3, settings) WHERE id = $1 \
             RETURNING id, name, settings, created_at",
        )
        .bind(id)
        .bind(p.name)
        .bind(p.settings)
        .fetch_one(&state.pool)
        .await?,
    ))
}

// ---------------------------------------------------------------- users

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListQuery),
    responses((status = 200, body = Page<User>)))]
pub async fn list_users(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<User>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let sql = format!(
        "SELECT {USER_COLS} FROM users WHERE tenant_id = $1 AND ($2::int8 IS NULL OR id {} $2) \
         AND ($3::text IS NULL OR email ILIKE '%' || $3 || '%' OR name ILIKE '%' || $3 || '%') ORDER BY id {} LIMIT $4",
        if desc { "<" } else { ">" },
        if desc { "DESC" } else { "ASC" }
    );
    let rows: Vec<User> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ctx.tenant_id)
        .bind(cursor)
        .bind(&q.q)
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(page(rows, &q, &state, |u| u.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub email: String,
    #[serde(default)]
    pub name: String,
    pub role: Role,
    /// Omit to have one generated (returned once in the response).
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: User,
    /// Only when the server generated it; shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

pub fn check_email(e: &str) -> ApiResult<()> {
    let ok = e.len() <= 320 && e.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
    if !ok || e.chars().any(char::is_whitespace) {
        return Err(ApiError::validation("email", "not an email address"));
    }
    Ok(())
}

/// Creates a user in a tenant (shared with `clutch user add`). Returns the id and the
/// password when one was generated.
pub async fn create_user_in(
    pool: &sqlx::PgPool,
    tenant_id: i64,
    email: &str,
    name: &str,
    role: Role,
    password: Option<String>,
) -> ApiResult<(i64, Option<String>)> {
    check_email(email)?;
    let generated = password.is_none();
    let password = password.unwrap_or_else(|| auth::random_token()[..20].to_string());
    auth::check_password_policy(&password)?;
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_secret(&pw))
        .await
        .map_err(|_| ApiError::internal())?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO users (tenant_id, email, password_hash, role, name) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(tenant_id)
    .bind(email.trim())
    .bind(hash)
    .bind(role.as_str())
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok((id, generated.then_some(password)))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = CreatedUser), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateUser>,
) -> ApiResult<Response> {
    let (id, password) = create_user_in(
        &state.pool,
        ctx.tenant_id,
        &req.email,
        &req.name,
        req.role,
        req.password,
    )
    .await?;
    let user = get_user(&state, &ctx, id).await?;
    Ok((StatusCode::CREATED, Json(CreatedUser { user, password })).into_response())
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 200, body = User), (status = 404, body = crate::error::ErrorBody)))]
pub async fn read_user(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<User>> {
    Ok(Json(get_user(&state, &ctx, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)), request_body = UserPatch,
    responses((status = 200, body = User), (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub async fn patch_user(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: crate::audit::Audit,
    ApiPath(id): ApiPath<i64>,
    ApiJson(p): ApiJson<UserPatch>,
) -> ApiResult<Json<User>> {
    audit.before(&get_user(&state, &ctx, id).await?);
    // An admin cannot lock themselves out of their own tenant.
    if id == ctx.user_id && (p.role.is_some_and(|r| r != ctx.role) || p.disabled == Some(true)) {
        return Err(ApiError::validation("role", "you cannot demote or disable yourself"));
    }
    sqlx::query(
        "UPDATE users SET name = coalesce($3, name), role = coalesce($4, role), disabled = coalesce($5, disabled), \
         updated_at = now() WHERE tenant_id = $1 AND id = $2",
    )
    .bind(ctx.tenant_id)
    .bind(id)
    .bind(p.name)
    .bind(p.role.map(Role::as_str))
    .bind(p.disabled)
    .execute(&state.pool)
    .await?;
    if p.disabled == Some(true) {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(&state.pool)
            .await?;
    }
    Ok(Json(get_user(&state, &ctx, id).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    ctx: Ctx,
    audit: crate::audit::Audit,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    if id == ctx.user_id {
        return Err(ApiError::validation("id", "you cannot delete yourself"));
    }
    audit.before(&get_user(&state, &ctx, id).await?);
    let n = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
        .bind(ctx.tenant_id)
        .bind(id)
        .execute(&state.pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- API keys

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    /// Public part of the key, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub user_id: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const KEY_COLS: &str = "id, name, prefix, scopes, user_id, expires_at, last_used_at, created_at";

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", params(ListQuery),
    responses((status = 200, body = Page<ApiKey>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<ApiKey>>> {
    let (cursor, desc, limit) = q.keyset(&state)?;
    let sql = format!(
        "SELECT {KEY_COLS} FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL \
         AND ($2::int8 IS NULL OR id {} $2) ORDER BY id {} LIMIT $3",
        if desc { "<" } else { ">" },
        if desc { "DESC" } else { "ASC" }
    );
    let rows: Vec<ApiKey> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ctx.tenant_id)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    Ok(Json(page(rows, &q, &state, |k| k.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    /// `read` and/or `write`.
    pub scopes: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The key itself, shown only in this response; send it as `X-Api-Key`.
    pub secret: String,
}

/// Create an API key acting with the caller's role. The key is shown once.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateKey,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = CreatedKey), (status = 422, body = crate::error::ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<Response> {
    crate::resources::check_name("name", &req.name)?;
    if req.scopes.is_empty() || req.scopes.iter().any(|s| s != "read" && s != "write") {
        return Err(ApiError::validation(
            "scopes",
            "a non-empty list of \"read\" and \"write\"",
        ));
    }
    if req.expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(ApiError::validation("expires_at", "must be in the future"));
    }
    let (secret, prefix) = auth::new_api_key();
    let key: ApiKey = sqlx::query_as(sqlf!(
        "INSERT INTO api_keys (tenant_id, user_id, name, prefix, key_hash, scopes, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLS}"
    ))
    .bind(ctx.tenant_id)
    .bind(ctx.user_id)
    .bind(&req.name)
    .bind(&prefix)
    .bind(auth::sha256(&secret))
    .bind(&req.scopes)
    .bind(req.expires_at)
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { key, secret })).into_response())
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete_key(State(state): State<AppState>, ctx: Ctx, ApiPath(id): ApiPath<i64>) -> ApiResult<StatusCode> {
    let n =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
            .bind(ctx.tenant_id)
            .bind(id)
            .execute(&state.pool)
            .await?
            .rows_affected();
    if n == 0 {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Finds or creates a tenant by name (for `clutch user add`).
pub async fn ensure_tenant(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<i64> {
    ingest::registry::ensure_tenant(pool, name).await.map_err(Into::into)
}

/// (id, user id, family, expires, rotated, revoked, tenant id, user disabled).
type RefreshRow = (
    i64,
    i64,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    i64,
    bool,
);
