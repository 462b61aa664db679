//! Routes for whoever runs the sandbox (tests, demo scripts), under
//! `/sandbox`: no bearer token, never faulted.
//!
//! - `GET /sandbox/health` → `{"status": "ok"}`
//! - `GET /sandbox/faults` → the current [`Faults`]
//! - `PUT /sandbox/faults` with a [`Faults`] (missing fields default) → the
//!   new settings, or 400 if a rate is outside 0..=1
//! - `GET /sandbox/customers/{id}/codes/latest` → `{"CodeId", "Code"}` of the
//!   last one-time code "texted" to the customer, or 404
//! - `GET /sandbox/audit` → the ledger invariants (see [`ledger::Audit`])

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;

use crate::api::{AppState, JsonBody};
use crate::bank;
use crate::error::{ApiError, Reply};
use crate::faults::Faults;
use crate::ids::CustomerId;
use crate::ledger;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/sandbox/health", get(health))
        .route("/sandbox/faults", get(get_faults).put(put_faults))
        .route(
            "/sandbox/customers/{customer_id}/codes/latest",
            get(latest_code),
        )
        .route("/sandbox/audit", get(audit))
}

async fn health() -> Reply {
    Reply::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn get_faults(State(state): State<AppState>) -> Reply {
    Reply::json(StatusCode::OK, &state.faults.get())
}

async fn put_faults(
    State(state): State<AppState>,
    JsonBody(faults): JsonBody<Faults>,
) -> Result<Reply, ApiError> {
    faults
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    tracing::info!(?faults, "sandbox-bank: faults changed");
    state.faults.set(faults.clone());
    Ok(Reply::json(StatusCode::OK, &faults))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LatestCode {
    code_id: String,
    code: String,
}

async fn latest_code(
    State(state): State<AppState>,
    Path(customer): Path<String>,
) -> Result<Reply, ApiError> {
    let customer = CustomerId::parse(&customer).ok_or_else(|| {
        ApiError::invalid("the customer id must be 1 to 128 visible ASCII characters")
    })?;
    let (code_id, code) = bank::latest_code(&state.store, &customer)
        .await?
        .ok_or_else(|| ApiError::not_found("no one-time code was sent to this customer"))?;
    Ok(Reply::json(StatusCode::OK, &LatestCode { code_id, code }))
}

async fn audit(State(state): State<AppState>) -> Result<Reply, ApiError> {
    Ok(Reply::json(
        StatusCode::OK,
        &ledger::audit(&state.store.pool).await?,
    ))
}
