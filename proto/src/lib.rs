//! bankbot's wire API: the generated `bankbot.v1` messages, tonic client and
//! server, and the descriptor set that server reflection serves. No logic
//! lives here; the service converts these types to domain types at its edge.

#![allow(missing_debug_implementations, unused_qualifications, clippy::all)]

pub mod v1 {
    tonic::include_proto!("bankbot.v1");
}

/// Encoded `FileDescriptorSet` of every bankbot proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bankbot_descriptor.bin"));
