//! The hub's federation v1 port (TAK's hub: 9101): mutual TLS, then 4-byte length-prefixed
//! `FederatedEvent` frames both ways; no ROL and no group stream in v1. A v1 federate's id
//! is new on every connection (TAK: leaf SHA-256 and a connection hash), so it is admitted,
//! and routed, through its CA groups only.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Hub, Session};
use crate::federation::fig::FederatedEvent;
use crate::federation::v1::{frame, Decoder};
use crate::link::listen::{Conn, Handler};
use crate::link::{log_bad_input, LinkCounters};
use crate::sync::lock;

pub struct V1Handler(pub Arc<Hub>);

impl Handler for V1Handler {
    fn run(self: Arc<Self>, conn: Conn) -> BoxFuture<'static, ()> {
        Box::pin(serve(self.0.clone(), conn))
    }
}

async fn serve(hub: Arc<Hub>, conn: Conn) {
    let Conn { io, remote, identity, cancel } = conn;
    let Some(identity) = identity else { return };
    let serial = hub.serial.fetch_add(1, Relaxed);
    let fingerprint = identity.fingerprint.replace(':', "").to_ascii_lowercase();
    let fed_id = format!("{fingerprint}-{serial}");
    let ca_groups = super::identity::ca_groups(&identity.issuers);
    let p = hub.policy();
    if !p.admits(&fed_id, &p.membership(&fed_id, &ca_groups)) {
        log_bad_input(LinkCounters::inc(&hub.counters.refused), "hub", &remote, &format!("v1 federate {} refused: none of its CA groups {ca_groups:?} is a group node of the policy", identity.cn));
        return;
    }
    let (tx, mut rx) = mpsc::channel::<FederatedEvent>(hub.queue_depth);
    let s = Session::new(serial, remote.clone(), fed_id.clone(), identity.cn.clone(), fingerprint, ca_groups, false, cancel.child_token());
    hub.join(s.clone());
    lock(&s.streams).events = Some(tx);
    tracing::info!(federate = %fed_id, %remote, "v1 federate joined the hub");
    let (mut rd, mut wr) = tokio::io::split(io);
    let first = hub.contacts_for(&s);
    let stop = s.cancel.clone();
    let why = tokio::select! {
        w = write_frames(&mut wr, &mut rx, first, &stop) => w,
        r = read_frames(&mut rd, &hub, &s, &remote, &stop) => r,
    };
    s.cancel.cancel();
    let contacts: Vec<String> = lock(&s.contacts).keys().cloned().collect();
    for uid in contacts {
        hub.route_event(&s, FederatedEvent { contact: Some(crate::federation::fig::ContactListEntry { operation: crate::federation::fig::Crud::Delete as i32, uid, ..Default::default() }), ..Default::default() }).drop_now(&hub);
    }
    hub.part(serial);
    tracing::info!(federate = %fed_id, %remote, reason = why, "v1 federate left the hub");
}

/// Writes the contacts, then what is routed to this federate, coalesced; why it stopped.
async fn write_frames<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, rx: &mut mpsc::Receiver<FederatedEvent>, first: Vec<FederatedEvent>, stop: &tokio_util::sync::CancellationToken) -> &'static str {
    let mut buf = Vec::new();
    for fe in &first {
        frame::encode(fe, &mut buf);
    }
    loop {
        if !buf.is_empty() {
            if wr.write_all(&buf).await.is_err() {
                return "write error";
            }
            buf.clear();
        }
        let fe = tokio::select! {
            _ = stop.cancelled() => return "closed",
            m = rx.recv() => match m {
                Some(fe) => fe,
                None => return "closed",
            },
        };
        frame::encode(&fe, &mut buf);
        while let Ok(fe) = rx.try_recv() {
            frame::encode(&fe, &mut buf);
            if buf.len() > 256 << 10 {
                break;
            }
        }
    }
}

/// Reads frames and routes them; why it stopped.
async fn read_frames<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, hub: &Hub, s: &Session, remote: &str, stop: &tokio_util::sync::CancellationToken) -> &'static str {
    let mut dec = Decoder::new(frame::DEFAULT_MAX_FRAME);
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return "closed",
            r = rd.read_buf(dec.read_buffer()) => r,
        };
        match r {
            Ok(0) => return "closed by the federate",
            Ok(_) => {}
            Err(_) => return "read error",
        }
        while let Some(f) = dec.next_frame() {
            match f {
                Ok(fe) if fe.event.is_some() || fe.contact.is_some() => hub.route_event(s, fe).deliver(hub).await,
                Ok(_) => {}
                Err(e) => {
                    // v1 has no resynchronisation point: the connection ends (as TAK's).
                    log_bad_input(LinkCounters::inc(&hub.counters.decode_errors), "hub", remote, &e);
                    return "undecodable frame";
                }
            }
        }
    }
}
