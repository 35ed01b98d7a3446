//! Types generated at build time from `proto/` (TAK protocol v1).
#![allow(clippy::all, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/atakmap.commoncommo.protobuf.v1.rs"));
