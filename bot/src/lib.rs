//! bankbot, the service and its command-line tool. This crate owns what staff
//! and operators touch: the intent catalogue (YAML files under `intents/`,
//! loaded with exact `file:line:col` diagnostics), evaluation data, base-model
//! acquisition, and the `bankbot` subcommands that train, evaluate and run the
//! NLU from `bankbot-models`; and the conversation service: settings,
//! storage (sqlx), the turn loop (`service`) and its gRPC edge (`grpc`, with
//! JWT `auth`), the dialog `executor` around `bankbot-dialog`, and the
//! `bank` connector choice with the payment reconciler.

pub mod atomic;
pub mod auth;
pub mod bank;
pub mod catalogue;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod escalation;
pub mod evalset;
pub mod executor;
pub mod fetch;
pub mod grpc;
pub mod input;
pub mod nlu;
pub mod paths;
pub mod report;
pub mod service;
pub mod settings;
pub mod store;
pub mod text;
pub mod yaml;
