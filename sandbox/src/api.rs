//! The HTTP layer: routes of the bank API under [`BASE_PATH`], the admin
//! routes, and the middleware around them.
//!
//! A bank-API request passes, outermost first: error shaping and
//! interaction-id echo (every route) → bearer token → faults → customer
//! header and enrolment → the handler. Keyed writes run in a spawned task
//! holding their in-flight claim, so a client that hangs up mid-request
//! cannot cancel a half-done write: it completes and its answer is stored.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bankbot_connectors::wire::{
    BASE_PATH, CardStatusChange, CodeCheck, CodeRequest, ContactChange, DisputeRequest, Envelope,
    INTERACTION_HEADER, PaymentRequest,
};
use serde::de::DeserializeOwned;

use crate::admin;
use crate::bank::{self, TransactionQuery};
use crate::db::Store;
use crate::error::{self, ApiError, Reply, UNAUTHORIZED};
use crate::faults::{self, CrashAfterApply, FaultSwitch};
use crate::idempotency::{InFlight, Keyed, Operation, canonical_hash};
use crate::ids::{CustomerId, IdempotencyKey};
use crate::seed;

/// Largest request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything the handlers share.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) faults: FaultSwitch,
    /// Required bearer token of the bank API, if any.
    pub(crate) token: Option<Arc<str>>,
    /// Every one-time code is this instead of a random one (demos).
    pub(crate) fixed_code: Option<Arc<str>>,
    pub(crate) inflight: InFlight,
}

/// The whole application.
pub(crate) fn router(state: AppState) -> Router {
    let p = |path: &str| format!("{BASE_PATH}{path}");
    let bank = Router::new()
        .route(&p("/accounts"), get(list_accounts))
        .route(&p("/accounts/{account_id}/balances"), get(get_balances))
        .route(
            &p("/accounts/{account_id}/transactions"),
            get(list_transactions),
        )
        .route(&p("/payees"), get(list_payees))
        .route(&p("/domestic-payments"), post(create_payment))
        .route(&p("/domestic-payments/{payment_id}"), get(get_payment))
        .route(
            &p("/domestic-payments/by-idempotency-key/{key}"),
            get(get_payment_by_key),
        )
        .route(&p("/cards"), get(list_cards))
        .route(&p("/cards/{card_id}/status"), put(change_card_status))
        .route(&p("/cards/{card_id}/replacements"), post(replace_card))
        .route(&p("/disputes"), post(open_dispute))
        .route(&p("/one-time-codes"), post(send_code))
        .route(
            &p("/one-time-codes/{code_id}/verification"),
            post(verify_code),
        )
        .route(&p("/contact-details"), put(update_contact))
        // Layers added later run first: auth, then faults, then customer.
        .route_layer(middleware::from_fn_with_state(state.clone(), customer))
        .route_layer(middleware::from_fn_with_state(
            state.faults.clone(),
            faults::inject,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(bank)
        .merge(admin::router())
        .fallback(unknown_route)
        .layer(middleware::from_fn(shape_errors))
        .with_state(state)
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

// ----------------------------------------------------------- middleware

/// Turns every error that is not already an `ErrorResponse` (axum's own
/// rejections, 405s) into one, and echoes `x-fapi-interaction-id`.
async fn shape_errors(req: Request, next: Next) -> Response {
    let interaction = req.headers().get(INTERACTION_HEADER).cloned();
    let mut response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (mut parts, body) = response.into_parts();
        let text = to_bytes(body, 4096)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let Reply { body, .. } =
            Reply::from(ApiError::new(status, error::code_for_status(status), text));
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response = Response::from_parts(parts, Body::from(body.unwrap_or_default()));
    }
    if let Some(id) = interaction {
        response.headers_mut().insert(INTERACTION_HEADER, id);
    }
    response
}

/// Compares without an early exit on the first differing byte.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 401 unless the request carries `Authorization: Bearer <token>` (when a
/// token is configured).
async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|t| same_token(t.as_bytes(), token.as_bytes())) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                UNAUTHORIZED,
                "a valid `Authorization: Bearer` token is required",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(req).await
}

/// Parses `x-customer-id`, enrols the customer on first use, and hands the
/// id to the handler.
async fn customer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let customer = match CustomerId::from_headers(req.headers()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = seed::ensure_enrolled(&state.store, &customer).await {
        return e.into_response();
    }
    req.extensions_mut().insert(customer);
    next.run(req).await
}

// ----------------------------------------------------------- extractors

/// A JSON body of at most [`MAX_BODY_BYTES`], refused with an
/// `ErrorResponse` that says what is wrong with it.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let json = ct
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .is_some_and(|m| {
                    let m = m.trim();
                    m.eq_ignore_ascii_case("application/json") || m.ends_with("+json")
                });
            if !json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    bankbot_connectors::wire::codes::FIELD_INVALID,
                    "the body must be `application/json`",
                ));
            }
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                bankbot_connectors::wire::codes::FIELD_INVALID,
                format!("the body is larger than {} KiB", MAX_BODY_BYTES / 1024),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let bytes = to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        if bytes.is_empty() {
            return Err(ApiError::invalid("the request needs a JSON body"));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("the body is not a valid request: {e}")))
    }
}

/// Runs a keyed write in its own task while holding the key in flight; a
/// second request with the key meanwhile gets 409.
async fn keyed_write<F>(state: &AppState, k: &Keyed, work: F) -> Response
where
    F: Future<Output = Result<Reply, ApiError>> + Send + 'static,
{
    let Some(claim) = state.inflight.claim(k) else {
        return ApiError::in_flight().into_response();
    };
    let task = tokio::spawn(async move {
        let _claim = claim;
        work.await
    });
    match task.await {
        Ok(Ok(reply)) => reply.into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "sandbox-bank: a write task failed");
            ApiError::internal("the bank failed while processing the request").into_response()
        }
    }
}

fn keyed<T: serde::Serialize>(
    customer: CustomerId,
    operation: Operation,
    key: IdempotencyKey,
    request: &T,
) -> Keyed {
    Keyed {
        customer,
        operation,
        key,
        hash: canonical_hash(request),
    }
}

fn ok<T: serde::Serialize>(data: T) -> Reply {
    Reply::json(StatusCode::OK, &Envelope { data })
}

// ------------------------------------------------------------- handlers

async fn list_accounts(
    State(state): State<AppState>,
    customer: CustomerId,
) -> Result<Reply, ApiError> {
    let account = bank::accounts(&state.store, &customer).await?;
    Ok(ok(bankbot_connectors::wire::Accounts { account }))
}

async fn get_balances(
    State(state): State<AppState>,
    customer: CustomerId,
    Path(account_id): Path<String>,
) -> Result<Reply, ApiError> {
    Ok(ok(
        bank::balances(&state.store, &customer, &account_id).await?
    ))
}

async fn list_transactions(
    State(state): State<AppState>,
    customer: CustomerId,
    Path(account_id): Path<String>,
    query: Result<Query<TransactionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Reply, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::invalid(format!("the query string is malformed: {e}")))?;
    let page = bank::transactions(&state.store, &customer, &account_id, &query).await?;
    Ok(Reply::json(StatusCode::OK, &page))
}

async fn list_payees(
    State(state): State<AppState>,
    customer: CustomerId,
) -> Result<Reply, ApiError> {
    Ok(ok(bank::payees(&state.store, &customer).await?))
}

async fn list_cards(
    State(state): State<AppState>,
    customer: CustomerId,
) -> Result<Reply, ApiError> {
    Ok(ok(bank::cards(&state.store, &customer).await?))
}

async fn get_payment(
    State(state): State<AppState>,
    customer: CustomerId,
    Path(payment_id): Path<String>,
) -> Result<Reply, ApiError> {
    Ok(ok(
        bank::payment(&state.store, &customer, &payment_id).await?
    ))
}

async fn get_payment_by_key(
    State(state): State<AppState>,
    customer: CustomerId,
    Path(key): Path<String>,
) -> Result<Reply, ApiError> {
    Ok(ok(
        bank::payment_by_key(&state.store, &customer, &key).await?
    ))
}

async fn create_payment(
    State(state): State<AppState>,
    customer: CustomerId,
    key: IdempotencyKey,
    crash: Option<axum::Extension<CrashAfterApply>>,
    JsonBody(request): JsonBody<Envelope<PaymentRequest>>,
) -> Response {
    // The hash covers exactly the re-serialised request body.
    let k = keyed(customer, Operation::Payment, key, &request);
    let store = state.store.clone();
    let crash = crash.is_some();
    let task_k = k.clone();
    keyed_write(&state, &k, async move {
        let outcome = bank::create_payment(&store, &task_k, &request.data).await?;
        if crash && outcome.booked_now {
            tracing::error!(
                "sandbox-bank: crash fault: aborting after committing a payment, before answering"
            );
            std::process::abort();
        }
        Ok(outcome.reply)
    })
    .await
}

async fn change_card_status(
    State(state): State<AppState>,
    customer: CustomerId,
    Path(card_id): Path<String>,
    key: IdempotencyKey,
    JsonBody(request): JsonBody<Envelope<CardStatusChange>>,
) -> Response {
    let k = keyed(customer, Operation::CardStatus, key, &(&card_id, &request));
    let store = state.store.clone();
    let task_k = k.clone();
    keyed_write(&state, &k, async move {
        bank::change_card_status(&store, &task_k, &card_id, request.data.status).await
    })
    .await
}

async fn replace_card(
    State(state): State<AppState>,
    customer: CustomerId,
    Path(card_id): Path<String>,
    key: IdempotencyKey,
) -> Response {
    // The endpoint has no body: the card is the whole request.
    let k = keyed(customer, Operation::CardReplacement, key, &card_id);
    let store = state.store.clone();
    let task_k = k.clone();
    keyed_write(&state, &k, async move {
        bank::replace_card(&store, &task_k, &card_id).await
    })
    .await
}

async fn open_dispute(
    State(state): State<AppState>,
    customer: CustomerId,
    key: IdempotencyKey,
    JsonBody(request): JsonBody<Envelope<DisputeRequest>>,
) -> Response {
    let k = keyed(customer, Operation::Dispute, key, &request);
    let store = state.store.clone();
    let task_k = k.clone();
    keyed_write(&state, &k, async move {
        bank::open_dispute(&store, &task_k, &request.data).await
    })
    .await
}

async fn send_code(
    State(state): State<AppState>,
    customer: CustomerId,
    JsonBody(request): JsonBody<Envelope<CodeRequest>>,
) -> Result<Reply, ApiError> {
    let sent = bank::send_code(
        &state.store,
        &customer,
        &request.data,
        state.fixed_code.as_deref(),
    )
    .await?;
    Ok(Reply::json(StatusCode::CREATED, &Envelope { data: sent }))
}

async fn verify_code(
    State(state): State<AppState>,
    customer: CustomerId,
    Path(code_id): Path<String>,
    key: IdempotencyKey,
    JsonBody(request): JsonBody<Envelope<CodeCheck>>,
) -> Response {
    let k = keyed(
        customer,
        Operation::CodeVerification,
        key,
        &(&code_id, &request),
    );
    let store = state.store.clone();
    let task_k = k.clone();
    keyed_write(&state, &k, async move {
        bank::verify_code(&store, &task_k, &code_id, &request.data).await
    })
    .await
}

async fn update_contact(
    State(state): State<AppState>,
    customer: CustomerId,
    key: IdempotencyKey,
    JsonBody(request): JsonBody<Envelope<ContactChange>>,
) -> Response {
    let k = keyed(customer, Operation::Contact, key, &request);
    let store = state.store.clone();
    let task_k = k.clone();
    keyed_write(&state, &k, async move {
        bank::update_contact(&store, &task_k, &request.data).await
    })
    .await
}
