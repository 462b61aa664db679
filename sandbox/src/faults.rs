//! Fault injection for the bank API (never the `/sandbox/*` admin routes):
//! added latency, 503s, slow answers and, for payments, a crash right after
//! the commit. Each request draws its own random numbers, so a rate of 0.3
//! faults about 30% of the requests in scope.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bankbot_connectors::wire::{BASE_PATH, codes};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The longest delay a fault may add, so a typo cannot hang a test run.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Which bank-API requests faults apply to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultScope {
    /// Every bank-API request.
    #[default]
    #[serde(alias = "All")]
    All,
    /// Requests that change state (any method but GET and HEAD).
    #[serde(alias = "Writes")]
    Writes,
    /// Payment creation only (`POST /domestic-payments`).
    #[serde(alias = "Payments")]
    Payments,
}

impl FromStr for FaultScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "all" => Ok(FaultScope::All),
            "writes" => Ok(FaultScope::Writes),
            "payments" => Ok(FaultScope::Payments),
            _ => Err(format!(
                "`{s}` is not a fault scope (all, writes or payments)"
            )),
        }
    }
}

impl fmt::Display for FaultScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultScope::All => "all",
            FaultScope::Writes => "writes",
            FaultScope::Payments => "payments",
        })
    }
}

/// What can go wrong, on purpose. Rates are probabilities in `0..=1`.
///
/// JSON (`GET`/`PUT /sandbox/faults`) uses these field names; missing fields
/// take their defaults, unknown ones are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every request in scope before it is handled.
    pub latency_ms: u64,
    /// Answer 503 with `Retry-After: 1` without doing anything.
    pub error_rate: f64,
    /// Handle the request, then wait `timeout_ms` before answering: the
    /// client gives up although the bank did the work.
    pub timeout_rate: f64,
    /// How long a timeout fault holds the answer (default 30000).
    pub timeout_ms: u64,
    /// Payments only: commit the payment, then `abort()` the whole process
    /// before answering. Only sensible for a separate `sandbox-bank` process.
    pub crash_after_apply_rate: f64,
    pub scope: FaultScope,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_ms: 30_000,
            crash_after_apply_rate: 0.0,
            scope: FaultScope::All,
        }
    }
}

/// Why a [`Faults`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    #[error("`{field}` must be a probability from 0 to 1, got {value}")]
    RateOutOfRange { field: &'static str, value: f64 },
    #[error("`{field}` must be at most {MAX_DELAY_MS} ms, got {value}")]
    DelayTooLong { field: &'static str, value: u64 },
}

impl Faults {
    /// Checks every rate is in `0..=1` and every delay at most
    /// [`MAX_DELAY_MS`].
    pub fn validate(&self) -> Result<(), FaultsError> {
        for (field, value) in [
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
            ("crash_after_apply_rate", self.crash_after_apply_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultsError::RateOutOfRange { field, value });
            }
        }
        for (field, value) in [
            ("latency_ms", self.latency_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if value > MAX_DELAY_MS {
                return Err(FaultsError::DelayTooLong { field, value });
            }
        }
        Ok(())
    }
}

/// The live fault settings, shared by the middleware and the admin routes.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultSwitch(Arc<RwLock<Faults>>);

impl FaultSwitch {
    pub(crate) fn new(faults: Faults) -> Self {
        FaultSwitch(Arc::new(RwLock::new(faults)))
    }

    pub(crate) fn get(&self) -> Faults {
        // Writers replace the whole value: a poisoned lock still holds a
        // complete, validated `Faults`.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, faults: Faults) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = faults;
    }
}

/// Put in a payment request's extensions when this request drew the crash
/// fault; the payment handler aborts after committing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrashAfterApply;

fn is_payment_creation(req: &Request) -> bool {
    req.method() == Method::POST
        && req
            .uri()
            .path()
            .strip_prefix(BASE_PATH)
            .is_some_and(|p| p.trim_end_matches('/') == "/domestic-payments")
}

/// The middleware: applies the current [`Faults`] to one bank-API request.
pub(crate) async fn inject(
    State(switch): State<FaultSwitch>,
    mut req: Request,
    next: Next,
) -> Response {
    let faults = switch.get();
    let payment = is_payment_creation(&req);
    let in_scope = match faults.scope {
        FaultScope::All => true,
        FaultScope::Writes => !matches!(*req.method(), Method::GET | Method::HEAD),
        FaultScope::Payments => payment,
    };
    // Draw before any await: the thread-local generator is not `Send`.
    let (error, timeout, crash) = {
        let mut rng = rand::rng();
        (
            rng.random::<f64>() < faults.error_rate,
            rng.random::<f64>() < faults.timeout_rate,
            rng.random::<f64>() < faults.crash_after_apply_rate,
        )
    };
    if payment && crash {
        req.extensions_mut().insert(CrashAfterApply);
    }
    if !in_scope {
        return next.run(req).await;
    }
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if error {
        tracing::info!(path = %req.uri().path(), "sandbox-bank: injected 503");
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNEXPECTED,
            "the bank is unavailable (injected fault); retry after 1 second",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let response = next.run(req).await;
    if timeout {
        tracing::info!(
            delay_ms = faults.timeout_ms,
            "sandbox-bank: injected timeout, answering late"
        );
        tokio::time::sleep(Duration::from_millis(faults.timeout_ms)).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_json() {
        assert_eq!(Faults::default().validate(), Ok(()));
        let bad = Faults {
            error_rate: 1.5,
            ..Faults::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(FaultsError::RateOutOfRange {
                field: "error_rate",
                ..
            })
        ));
        let nan = Faults {
            timeout_rate: f64::NAN,
            ..Faults::default()
        };
        assert!(nan.validate().is_err());
        let partial: Faults =
            serde_json::from_str(r#"{"error_rate": 1, "scope": "payments"}"#).expect("json");
        assert_eq!(partial.error_rate, 1.0);
        assert_eq!(partial.timeout_ms, 30_000);
        assert_eq!(partial.scope, FaultScope::Payments);
        assert!(serde_json::from_str::<Faults>(r#"{"eror_rate": 1}"#).is_err());
        assert_eq!("Writes".parse::<FaultScope>(), Ok(FaultScope::Writes));
        assert!("some".parse::<FaultScope>().is_err());
    }
}
