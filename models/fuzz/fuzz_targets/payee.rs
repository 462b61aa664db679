#![no_main]
#[path = "common.rs"]
mod common;
use bankbot_entities::{EntityKind, SavedPayee};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut ctx = common::context();
    ctx.payees = ["Mum", "Pierre Dubois", "Green Lane Nursery", "Zoë Ng"]
        .iter()
        .enumerate()
        .map(|(i, n)| SavedPayee { id: i.to_string(), name: (*n).to_owned(), aliases: vec![] })
        .collect();
    common::check(data, &[EntityKind::Payee], &ctx);
});
