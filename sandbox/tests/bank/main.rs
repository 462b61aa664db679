//! End-to-end tests of the sandbox bank: each test starts the real server on
//! 127.0.0.1:0 with its own SQLite file and talks HTTP to it.

#![allow(clippy::unwrap_used)]

mod binary;
mod edges;
mod helpers;
mod payments;
mod reads;
mod writes;
