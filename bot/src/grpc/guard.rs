//! What every ConversationService call passes before its handler runs: JWT
//! authentication (the principal is put in the request's extensions) and the
//! per-customer rate limit. Failed authentication is logged with its reason
//! and the peer address, never with the token.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use super::metrics::Metrics;
use super::status;
use crate::auth::{Authenticator, Principal, Role};

type Keyed = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// Per-customer token buckets.
#[derive(Debug)]
pub struct CustomerLimiter {
    limiter: Keyed,
    clock: DefaultClock,
}

impl CustomerLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::hashmap(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one call from the customer's bucket.
    pub fn check(&self, customer: &str) -> Result<(), Status> {
        match self.limiter.check_key(&customer.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(status::rate_limited(
                not_until.wait_time_from(self.clock.now()),
            )),
        }
    }

    /// Forgets customers whose buckets are full again (bounded memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[derive(Debug, Clone)]
pub struct Guard {
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<CustomerLimiter>,
    pub metrics: Arc<Metrics>,
    /// The one role the guarded service serves, and the service's name
    /// for the refusal.
    pub role: Role,
    pub service: &'static str,
}

impl Interceptor for Guard {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").map(|v| v.as_bytes());
        let principal = match self.auth.verify_header(header) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    reason = e.reason(),
                    peer = ?req.remote_addr(),
                    "authentication failed"
                );
                self.metrics.error(tonic::Code::Unauthenticated);
                return Err(status::from_auth(&e));
            }
        };
        // Each service serves one role: ConversationService customers (the
        // subject must own the conversation), AgentService agents.
        if principal.role != self.role {
            self.metrics.error(tonic::Code::PermissionDenied);
            return Err(status::status(
                tonic::Code::PermissionDenied,
                format!(
                    "the `{}` role cannot use {}; it is for the `{}` role",
                    principal.role.as_str(),
                    self.service,
                    self.role.as_str()
                ),
                "ROLE_NOT_ALLOWED",
                None,
                None,
            ));
        }
        if let Err(s) = self.limiter.check(&principal.subject) {
            self.metrics.error(s.code());
            return Err(s);
        }
        req.extensions_mut().insert(principal);
        Ok(req)
    }
}

/// The authenticated caller the guard put on the request.
pub fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated principal"))
}
