//! The one place errors become gRPC statuses, each with `google.rpc`
//! details: ErrorInfo (reason, domain `bankbot.v1`) always, BadRequest field
//! violations for invalid arguments, RetryInfo when retrying later helps.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::service::ServiceError;

pub const DOMAIN: &str = "bankbot.v1";

/// Builds a status with an ErrorInfo reason and optional extras.
pub fn status(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    violation: Option<(&str, &str)>,
    retry_after: Option<Duration>,
) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, DOMAIN, std::collections::HashMap::new());
    if let Some((field, description)) = violation {
        details.add_bad_request_violation(field, description);
    }
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}

pub fn invalid(field: &str, reason: &str, message: &str) -> Status {
    status(
        Code::InvalidArgument,
        format!("{field}: {message}"),
        reason,
        Some((field, message)),
        None,
    )
}

pub fn from_service(e: ServiceError) -> Status {
    match e {
        ServiceError::InvalidArgument {
            field,
            reason,
            message,
        } => invalid(field, reason, &message),
        ServiceError::NotFound => status(
            Code::NotFound,
            "conversation not found",
            "CONVERSATION_NOT_FOUND",
            None,
            None,
        ),
        ServiceError::Ended => status(
            Code::FailedPrecondition,
            "the conversation has ended; start a new one",
            "CONVERSATION_ENDED",
            None,
            None,
        ),
        ServiceError::IdReused => status(
            Code::AlreadyExists,
            "client_message_id was already used for a different message in this conversation",
            "CLIENT_MESSAGE_ID_REUSED",
            Some((
                "client_message_id",
                "already used for a different text; use a new id for a new message",
            )),
            None,
        ),
        ServiceError::Overloaded { what, retry_after } => status(
            Code::ResourceExhausted,
            format!("{what} is busy; retry shortly"),
            "OVERLOADED",
            None,
            Some(retry_after),
        ),
        ServiceError::Unavailable(message) => status(
            Code::Unavailable,
            message,
            "UNAVAILABLE",
            None,
            Some(Duration::from_secs(1)),
        ),
        ServiceError::TicketNotFound => status(
            Code::NotFound,
            "ticket not found",
            "TICKET_NOT_FOUND",
            None,
            None,
        ),
        ServiceError::Refused { reason, message } => {
            status(Code::FailedPrecondition, message, reason, None, None)
        }
        ServiceError::Internal(detail) => {
            // The detail is for operators; callers get a generic message.
            tracing::error!(error = %detail, "internal error");
            status(Code::Internal, "internal error", "INTERNAL", None, None)
        }
    }
}

pub fn from_auth(e: &AuthError) -> Status {
    status(Code::Unauthenticated, e.to_string(), e.reason(), None, None)
}

pub fn rate_limited(retry_after: Duration) -> Status {
    status(
        Code::ResourceExhausted,
        "too many calls for this customer; slow down",
        "RATE_LIMITED",
        None,
        Some(retry_after),
    )
}

pub fn shed(what: &str) -> Status {
    status(
        Code::ResourceExhausted,
        format!("the server is at its limit of {what}; retry shortly"),
        "OVERLOADED",
        None,
        Some(Duration::from_millis(250)),
    )
}

pub fn not_ready() -> Status {
    status(
        Code::Unavailable,
        "the service is starting (model or database not ready yet)",
        "NOT_READY",
        None,
        Some(Duration::from_secs(1)),
    )
}

pub fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        "the server is shutting down; reconnect with after_sequence set to the last sequence received",
        "SHUTTING_DOWN",
        None,
        Some(Duration::from_secs(1)),
    )
}
