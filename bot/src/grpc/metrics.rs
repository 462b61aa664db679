//! Prometheus metrics, served as text on the admin port (`/metrics`).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::service::TurnObserver;
use crate::store::NluRecord;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    turn_latency: Histogram,
    intents: Family<Labels, Counter>,
    fallbacks: Counter,
    replays: Counter,
    errors: Family<Labels, Counter>,
    engine_queue: Gauge<i64, std::sync::atomic::AtomicI64>,
    open_streams: Gauge<i64, std::sync::atomic::AtomicI64>,
    bank_calls: Family<Labels, Histogram>,
    bank_breaker_open: Gauge<i64, std::sync::atomic::AtomicI64>,
    tickets_open: Family<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bankbot");
        // 0.5 ms .. ~4 s
        let turn_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let intents = Family::<Labels, Counter>::default();
        let fallbacks = Counter::default();
        let replays = Counter::default();
        let errors = Family::<Labels, Counter>::default();
        let engine_queue = Gauge::default();
        let open_streams = Gauge::default();
        // 0.25 ms .. ~8 s
        let bank_calls = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00025, 2.0, 16))
        });
        let bank_breaker_open = Gauge::default();
        let tickets_open = Family::<Labels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "tickets_open",
            "Hand-over tickets waiting (queued) or with an agent (claimed), by skill",
            tickets_open.clone(),
        );
        registry.register(
            "bank_call_seconds",
            "Bank connector calls (all attempts), by operation and outcome",
            bank_calls.clone(),
        );
        registry.register(
            "bank_breaker_open",
            "1 while the bank connector's circuit breaker is open",
            bank_breaker_open.clone(),
        );
        registry.register(
            "turn_latency_seconds",
            "Time to handle one customer turn (validate, classify, store)",
            turn_latency.clone(),
        );
        registry.register(
            "intents",
            "Customer turns by recognised intent",
            intents.clone(),
        );
        registry.register(
            "fallbacks",
            "Turns answered with the out-of-scope reply",
            fallbacks.clone(),
        );
        registry.register(
            "replayed_turns",
            "Resent messages answered from storage",
            replays.clone(),
        );
        registry.register(
            "rpc_errors",
            "Calls that ended in an error, by gRPC code",
            errors.clone(),
        );
        registry.register(
            "engine_queue_depth",
            "Utterances waiting for the inference engine",
            engine_queue.clone(),
        );
        registry.register(
            "open_streams",
            "Event streams open (StreamEvents and Converse)",
            open_streams.clone(),
        );
        Self {
            registry,
            turn_latency,
            intents,
            fallbacks,
            replays,
            errors,
            engine_queue,
            open_streams,
            bank_calls,
            bank_breaker_open,
            tickets_open,
        }
    }

    pub fn error(&self, code: tonic::Code) {
        self.errors
            .get_or_create(&vec![("code", format!("{code:?}"))])
            .inc();
    }

    pub fn stream_opened(&self) {
        self.open_streams.inc();
    }

    pub fn stream_closed(&self) {
        self.open_streams.dec();
    }

    /// The exposition text, with the engine queue depth read now.
    pub fn render(
        &self,
        engine_queue: Option<usize>,
        tickets_open: Option<Vec<(crate::store::TicketState, String, i64)>>,
    ) -> String {
        if let Some(q) = engine_queue {
            self.engine_queue.set(i64::try_from(q).unwrap_or(i64::MAX));
        }
        if let Some(open) = tickets_open {
            // A skill whose tickets all closed reads 0, not its last count.
            self.tickets_open.clear();
            for (state, skill, n) in open {
                self.tickets_open
                    .get_or_create(&vec![
                        ("state", state.as_str().to_owned()),
                        ("skill", skill),
                    ])
                    .set(n);
            }
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl TurnObserver for Metrics {
    fn turn(&self, nlu: &NluRecord, latency: Duration, replayed: bool) {
        self.turn_latency.observe(latency.as_secs_f64());
        if replayed {
            self.replays.inc();
            return;
        }
        self.intents
            .get_or_create(&vec![("intent", nlu.intent.clone())])
            .inc();
        if nlu.out_of_scope {
            self.fallbacks.inc();
        }
    }
}

impl bankbot_connectors::http::CallObserver for Metrics {
    fn call(&self, operation: &'static str, outcome: &'static str, took: Duration) {
        self.bank_calls
            .get_or_create(&vec![
                ("operation", operation.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .observe(took.as_secs_f64());
    }

    fn breaker(&self, open: bool) {
        self.bank_breaker_open.set(i64::from(open));
    }
}
