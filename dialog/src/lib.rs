//! bankbot's dialog engine: a pure state machine. [`step`] takes the
//! compiled flows, the conversation's [`State`] and one [`Event`] (a
//! customer turn after NLU, a connector outcome, a step-up verdict, a hand
//! back from a person) and returns the new state and the [`Action`]s the
//! server must execute (replies, connector calls, step-up, escalation).
//! No IO, no async, no clock, no randomness: the same inputs always give
//! the same outputs, which is what the conversation tests rely on.

pub mod engine;
pub mod render;
pub mod spec;
pub mod state;

pub use engine::{HUMAN_QUICK_REPLY, step};
pub use spec::{Flow, Flows, Operation, OutcomeKind, Policy};
pub use state::{Action, CustomerFacts, Event, Named, Outcome, State, Turn, Value};

#[cfg(test)]
mod tests;
