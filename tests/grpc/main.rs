//! The conversation service end to end: real servers on 127.0.0.1:0 with a
//! fresh database each (SQLite, and PostgreSQL from DATABASE_URL), driven by
//! tonic clients over TCP; assertions on replies, statuses with their
//! `google.rpc` details, and what was stored.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod bank;
mod conversation;
mod crash;
mod handoff;
mod handoff_crash;
mod helpers;
mod process;
mod queue;
mod security;
mod streams;
