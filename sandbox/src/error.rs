//! What the bank answers: [`Reply`] for a finished result (the thing the
//! idempotency store keeps and replays byte for byte) and [`ApiError`] for a
//! refusal, always rendered as the API's `ErrorResponse`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bankbot_connectors::wire::{ErrorDetail, ErrorResponse, codes};
use serde::Serialize;

/// Error code of a missing or wrong bearer token; Open Banking leaves 401
/// bodies to the implementer.
pub(crate) const UNAUTHORIZED: &str = "BANKBOT.Unauthorized";

/// A refusal: HTTP status, machine-readable code (`codes::*`) and a message
/// precise enough to fix the request.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// The offending field (`Data.Initiation.InstructedAmount`), if any.
    pub(crate) path: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            path: None,
        }
    }

    pub(crate) fn at(mut self, path: &'static str) -> Self {
        self.path = Some(path);
        self
    }

    /// 400 `UK.OBIE.Field.Invalid`.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, codes::FIELD_INVALID, message)
    }

    pub(crate) fn header_missing(name: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::HEADER_MISSING,
            format!("the `{name}` header is required"),
        )
    }

    pub(crate) fn header_invalid(name: &str, why: &str) -> Self {
        ApiError::invalid(format!("the `{name}` header {why}"))
    }

    /// 404 `UK.OBIE.Resource.NotFound`: also what another customer's resource
    /// looks like, so ids cannot be probed across customers.
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, what)
    }

    /// 422 with a business reason (`BANKBOT.InsufficientFunds`, …).
    pub(crate) fn refused(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub(crate) fn consent_mismatch() -> Self {
        ApiError::refused(
            codes::CONSENT_MISMATCH,
            "this idempotency key was already used with a different request",
        )
    }

    pub(crate) fn in_flight() -> Self {
        ApiError::new(
            StatusCode::CONFLICT,
            codes::IN_FLIGHT,
            "a request with this idempotency key is still being processed; retry with the same key",
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::UNEXPECTED,
            message,
        )
    }

    /// Whether this refusal is a settled answer to the request, to be kept
    /// under its idempotency key: the business 422s are, the others (a
    /// malformed request, a missing resource, a key clash, a failure of the
    /// bank) say nothing final about the request itself.
    pub(crate) fn is_final(&self) -> bool {
        self.status == StatusCode::UNPROCESSABLE_ENTITY && self.code != codes::CONSENT_MISMATCH
    }

    pub(crate) fn body(&self) -> ErrorResponse {
        ErrorResponse {
            code: self.status.as_u16().to_string(),
            id: None,
            message: self.message.clone(),
            errors: vec![ErrorDetail {
                error_code: self.code.to_owned(),
                message: self.message.clone(),
                path: self.path.map(str::to_owned),
            }],
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "sandbox-bank: database error");
        ApiError::internal("the bank's database failed; try again")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Reply::from(self).into_response()
    }
}

/// A finished answer: status and JSON body (none for 204). Idempotent writes
/// store it and replay exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Option<String>,
}

impl Reply {
    pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
        match serde_json::to_string(value) {
            Ok(body) => Reply {
                status,
                body: Some(body),
            },
            Err(e) => ApiError::internal(format!("could not encode the response: {e}")).into(),
        }
    }

    pub(crate) fn empty(status: StatusCode) -> Reply {
        Reply { status, body: None }
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        // An ErrorResponse is strings only: encoding it cannot fail.
        let body = serde_json::to_string(&e.body()).unwrap_or_else(|_| String::from("{}"));
        Reply {
            status: e.status,
            body: Some(body),
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self.body {
            Some(body) => {
                let mut response = (self.status, body).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            None => self.status.into_response(),
        }
    }
}

/// The generic error code for a status the handlers did not produce
/// themselves (axum's own rejections, 405, …).
pub(crate) fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => UNAUTHORIZED,
        404 | 405 => codes::NOT_FOUND,
        400..=499 => codes::FIELD_INVALID,
        _ => codes::UNEXPECTED,
    }
}
