//! Protocol sessions without I/O, in the style of quinn-proto: each is a state machine that
//! takes what arrived and the current time, and returns what to send and when to wake. The
//! async code around one only reads, feeds, writes and sleeps, so every rule here is
//! unit-tested without sockets or clocks.
//!
//! * [`stream`]: a TAK stream connection (negotiation, keepalive, settling), shared by TCP,
//!   TLS and QUIC links, as server and as client.
//! * [`federate`]: a federation v2 session (TAK Server's call order, health deadlines,
//!   receipts of mission changes), as client and as server.

pub mod federate;
pub mod stream;
