//! A federation v1 link (TAK Server's port 9000 protocol), listening or connecting, over
//! mutual TLS: length-prefixed `FederatedEvent`s both ways ([`frame`]).
//!
//! On connect each side sends the latest position report of every local contact and a
//! contact CREATE for each; then live CoT, a contact CREATE the first time a local client
//! is seen on this connection, and a contact DELETE for `t-x-d-d`. Mission traffic
//! (`t-x-m-*`) is not sent over v1 (TAK Server federates missions only over v2). Received
//! contacts are registered so direct messages reach the federate; events carrying our own
//! provenance, or over their hop limit, are dropped; what a federate sends is not relayed
//! to other federates unless their policy says `relay_federates`. v1 has no heartbeat:
//! TCP keepalive finds dead links (and an idle timeout, when one is configured).

pub mod frame;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use frame::{encode, Decoder, FrameError, DEFAULT_MAX_FRAME};

use super::shared::{admit, attach_federate, federated_for, receive, FedSettings, RemoteContacts};
use crate::link::listen::{Conn, Handler};
use crate::link::rate::ReadRate;
use crate::link::write::{coalesce, write_timed, Stop};
use crate::link::{log_bad_input, Codec, LinkCounters};
use crate::router::{Message, RouterHandle};

/// Runs the v1 session on each connection of a federation v1 link.
pub struct V1Handler {
    pub s: Arc<FedSettings>,
    pub router: RouterHandle,
}

impl Handler for V1Handler {
    fn run(self: Arc<Self>, conn: Conn) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(run_session(conn, self.s.clone(), self.router.clone()))
    }
}

/// The frames for one routed event.
fn frames_for(m: &Message, s: &FedSettings, announced: &mut HashSet<String>, out: &mut Vec<u8>) -> bool {
    federated_for(m, s, announced, |fe| encode(&fe, out))
}

/// Runs one federation v1 connection until it closes or the link stops.
pub async fn run_session(conn: Conn, s: Arc<FedSettings>, router: RouterHandle) {
    let Conn { io, remote, identity, cancel } = conn;
    let Some(identity) = admit(identity, &s, &remote) else { return };
    let id = router.next_id();
    let session = cancel.child_token();
    let (snapshot, rx) = attach_federate(&router, &s, id, Codec::FigV1, "federation-v1", &remote, Some(identity.clone()), session.clone()).await;
    tracing::info!(link = %s.link, %remote, federate = %identity.federate_name(), fingerprint = %identity.fingerprint, "federate connected");
    let (rd, wr) = tokio::io::split(io);
    let contacts = RemoteContacts::default();
    let (reason, ()) = tokio::join!(read_loop(rd, id, &remote, &s, &router, &session, &contacts), write_loop(wr, rx, snapshot, &s, &remote, &session));
    router.detach(id).await;
    contacts.gone(id, &s, &router).await;
    tracing::info!(link = %s.link, %remote, reason, "federate disconnected");
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, id: u64, remote: &str, s: &FedSettings, router: &RouterHandle, session: &CancellationToken, contacts: &RemoteContacts) -> &'static str {
    let mut dec = Decoder::new(s.max_frame);
    let mut rate = ReadRate::new(s.read_rate);
    let mut last_rx = Instant::now();
    let reason = 'session: loop {
        let idle = s.idle_timeout.map(|d| last_rx + d);
        let r = tokio::select! {
            _ = session.cancelled() => break "closed",
            _ = async { match idle { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                LinkCounters::inc(&s.counters.idle_timeouts);
                break "idle timeout";
            }
            r = rd.read_buf(dec.read_buffer()) => r,
        };
        match r {
            Ok(0) => break "end of stream",
            Err(_) => break "read error",
            Ok(n) => {
                LinkCounters::add(&s.counters.bytes_in, n as u64);
                rate.bytes(n, &s.counters, &s.link, remote, session).await;
                last_rx = Instant::now();
            }
        }
        while let Some(f) = dec.next_frame() {
            match f {
                Ok(fe) => {
                    rate.event(&s.counters, &s.link, remote, session).await;
                    receive(fe, id, s, router, contacts).await
                }
                Err(e) => {
                    // The stream has no resynchronisation point: TAK Server closes too.
                    log_bad_input(LinkCounters::inc(&s.counters.frame_errors), &s.link, remote, &e);
                    break 'session "bad frame";
                }
            }
        }
    };
    session.cancel();
    reason
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Arc<Message>>, snapshot: Vec<Arc<Message>>, s: &FedSettings, remote: &str, session: &CancellationToken) {
    let mut announced = HashSet::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut n: u64 = snapshot.iter().map(|m| frames_for(m, s, &mut announced, &mut buf) as u64).sum();
    loop {
        if !buf.is_empty() {
            match write_timed(&mut wr, &buf, s.write_timeout, &s.counters, session).await {
                Ok(()) => LinkCounters::add(&s.counters.events_out, n),
                Err(Stop::Slow) => {
                    tracing::warn!(link = %s.link, remote, secs = s.write_timeout.as_secs_f64(), "slow federate: a write did not complete within the write timeout; disconnecting");
                    break;
                }
                Err(_) => break,
            }
            buf.clear();
            n = 0;
        }
        let m = tokio::select! {
            _ = session.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        coalesce(m, &mut rx, &mut buf, |m, buf| n += frames_for(m, s, &mut announced, buf) as u64);
    }
    session.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), wr.shutdown()).await;
}
