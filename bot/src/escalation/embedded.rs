//! The embedded queue: the tickets table in the service's database is the
//! queue. Tickets are enqueued by the turn's own transaction, so there is
//! nothing to publish; a claim picks the first waiting ticket of the
//! agent's skills by `sort_key` (`FOR UPDATE SKIP LOCKED` on PostgreSQL)
//! and takes it in the same transaction. Agents in this process are woken
//! by [`super::Escalations`]' change feed.

use super::{BoxFuture, QueueBackend, QueueError};
use crate::store::{Agent, Store, Ticket, TicketResult};

#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    store: Store,
}

impl EmbeddedQueue {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl QueueBackend for EmbeddedQueue {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn publish<'a>(&'a self, _ticket: &'a Ticket) -> BoxFuture<'a, Result<(), QueueError>> {
        // The committed row is already in the queue.
        Box::pin(async { Ok(()) })
    }

    fn claim_next<'a>(
        &'a self,
        agent: &'a Agent,
        lease_ms: i64,
        notice: &'a str,
    ) -> BoxFuture<'a, Result<Option<TicketResult>, QueueError>> {
        Box::pin(async move {
            Ok(self
                .store
                .claim_next_ticket(agent, lease_ms, notice)
                .await?)
        })
    }

    fn settled<'a>(&'a self, _ticket: &'a Ticket) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async { Ok(()) })
    }
}
