//! bankbot, the service and its command-line tool. This crate owns what staff
//! and operators touch: the intent catalogue (YAML files under `intents/`,
//! loaded with exact `file:line:col` diagnostics), evaluation data, base-model
//! acquisition, and the `bankbot` subcommands that train, evaluate and run the
//! NLU from `bankbot-models`. Later it hosts the gRPC service, dialog engine,
//! storage and escalation queue.

pub mod atomic;
pub mod catalogue;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod evalset;
pub mod fetch;
pub mod input;
pub mod nlu;
pub mod paths;
pub mod report;
pub mod yaml;
