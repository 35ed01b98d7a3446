//! takgate: a gateway for TAK (Team Awareness Kit) Cursor-on-Target traffic.
//!
//! Architecture map (see ARCHITECTURE.md in the shared docs):
//! * [`cot`]: the canonical [`cot::CotEvent`] and pure conversions to and from CoT XML and
//!   TAK protocol v1 protobuf; negotiation and keepalive builders.
//! * [`codec`]: framing of streams (XML split after `</event>`, `0xbf` varint frames) and
//!   mesh datagrams, independent of the format.
//! * [`error`]: error values for everything that reads bytes from the network.

pub mod codec;
pub mod cot;
pub mod cotcmd;
pub mod config;
pub mod error;
pub mod router;
pub mod runtime;
pub mod transport;
