//! The two request identities every handler trusts: who the call is for
//! (`x-customer-id`) and which logical request it is (`x-idempotency-key`).
//! Both are parsed once, at the edge, into types that cannot hold a bad value.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use bankbot_connectors::wire::{CUSTOMER_HEADER, IDEMPOTENCY_HEADER};

use crate::error::ApiError;

/// 1–128 visible ASCII characters (`\x21`–`\x7e`): the shape both headers
/// share, so they can be logged, stored and put in URLs without escaping
/// surprises.
fn visible_ascii(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Reads a required header of the visible-ASCII shape.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, ApiError> {
    let value = headers
        .get(name)
        .ok_or_else(|| ApiError::header_missing(name))?;
    value
        .to_str()
        .ok()
        .filter(|s| visible_ascii(s))
        .ok_or_else(|| ApiError::header_invalid(name, "must be 1 to 128 visible ASCII characters"))
}

/// The customer a request acts for. Customers are enrolled on first use, so
/// any well-formed id names a customer; the bearer token (when configured)
/// is what authorises the caller to speak for them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CustomerId(String);

impl CustomerId {
    pub(crate) fn parse(s: &str) -> Option<CustomerId> {
        visible_ascii(s).then(|| CustomerId(s.to_owned()))
    }

    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<CustomerId, ApiError> {
        header(headers, CUSTOMER_HEADER).map(|s| CustomerId(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Handlers take the customer the `customer` middleware parsed and enrolled.
impl<S: Send + Sync> FromRequestParts<S> for CustomerId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CustomerId>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the customer was not resolved for this route"))
    }
}

/// A client's name for one logical write, the same on every retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct IdempotencyKey(String);

impl IdempotencyKey {
    #[cfg(test)]
    pub(crate) fn parse(s: &str) -> Option<IdempotencyKey> {
        visible_ascii(s).then(|| IdempotencyKey(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        header(&parts.headers, IDEMPOTENCY_HEADER).map(|s| IdempotencyKey(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_visible_ascii_of_bounded_length() {
        assert!(CustomerId::parse("alice").is_some());
        assert!(CustomerId::parse("a-b_c.d@e~!").is_some());
        assert!(CustomerId::parse(&"x".repeat(128)).is_some());
        for bad in ["", "has space", "tab\t", "é", "\u{7f}"] {
            assert!(CustomerId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_none());
    }
}
