//! The hub's outgoing connections (a policy's FederationOutgoingCell): the hub dials another
//! hub or a TAK Server's federation v2 port as a client, in the order of TAK's `HubFigClient`
//! (../shared/specs/tak-fedhub.md §7): ClientEventStream and ServerFederateGroupsStream with
//! the hub's identity (type FEDERATION_HUB_CLIENT); on SERVING, ServerEventStream (an empty
//! event first, then the contacts of the federates that reach it) and its hub groups; health
//! checks every 3 s; after the first SERVING answer, the ROL streams (with what it missed).
//! The connection is one more member of the policy graph (an outgoing node, plus the CA
//! groups of the chain the server presents), reconnected every 5 s while the policy has it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::policy::OutgoingNode;
use super::{Hub, Session};
use crate::federation::fig::{client_health, BinaryBlob, identity as fig_identity, server_health, ClientHealth, FederateGroups, FederatedEvent, Identity, Rol, Subscription, TakServerVersion};
use crate::sync::lock;

/// TAK's `outgoingReconnectSeconds`.
const RECONNECT: Duration = Duration::from_secs(5);
const HEALTH_EVERY: Duration = Duration::from_secs(3);

/// `items`, then what arrives on `rx`, until `stop`: a request stream.
fn requests<T: Send + 'static>(items: Vec<T>, rx: mpsc::Receiver<T>, stop: CancellationToken) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold((std::collections::VecDeque::from(items), rx, stop), |(mut q, mut rx, stop)| async move {
        if let Some(x) = q.pop_front() {
            return Some((x, (q, rx, stop)));
        }
        let next = tokio::select! {
            _ = stop.cancelled() => None,
            m = rx.recv() => m,
        };
        next.map(|x| (x, (q, rx, stop)))
    })
}

/// Keeps one outgoing connection up until `cancel` (the hub stops, or the policy no longer
/// has it).
pub(super) async fn run(hub: Arc<Hub>, o: OutgoingNode, tls: Arc<rustls::ClientConfig>, cancel: CancellationToken) {
    let status = hub.status_of(&o.name);
    while !cancel.is_cancelled() {
        status.state(crate::link::LinkState::Connecting);
        let why = once(&hub, &o, &tls, &cancel, &status).await;
        tracing::warn!(outgoing = %o.name, host = %o.host, port = o.port, "hub outgoing connection ended: {why}; again in {} s", RECONNECT.as_secs());
        status.error(why);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

async fn once(hub: &Arc<Hub>, o: &OutgoingNode, tls: &Arc<rustls::ClientConfig>, cancel: &CancellationToken, status: &crate::link::ConnStatus) -> String {
    let addr = format!("{}:{}", o.host, o.port);
    let tcp = match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return format!("connect to {addr}: {e}"),
        Err(_) => return format!("connect to {addr} timed out"),
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(o.host.clone()) else { return format!("{:?} is not a server name", o.host) };
    let tls = match tokio::time::timeout(Duration::from_secs(10), tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return format!("TLS handshake with {addr}: {e}"),
        Err(_) => return format!("TLS handshake with {addr} timed out"),
    };
    let peer = crate::link::tls::identity(tls.get_ref().1.peer_certificates());
    let session = cancel.child_token();
    let _end = session.clone().drop_guard();
    let mut tasks = JoinSet::new();
    let mut c = match crate::federation::v2::h2_client(Box::new(tls), &addr, crate::federation::v2::DEFAULT_MAX_MESSAGE, &session, &mut tasks).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    let fingerprint = peer.as_ref().map(|p| p.fingerprint.replace(':', "").to_ascii_lowercase()).unwrap_or_default();
    let ca_groups = peer.as_ref().map(|p| super::identity::ca_groups(&p.issuers)).unwrap_or_default();
    let s = Session::new(hub.serial.fetch_add(1, Relaxed), addr.clone(), o.name.clone(), o.name.clone(), fingerprint, ca_groups, true, session.clone());
    hub.join(s.clone());
    let why = serve(hub, &s, &mut c, &mut tasks, &session, status).await;
    session.cancel();
    tasks.abort_all();
    hub.left(&s);
    hub.part(s.serial);
    why
}

async fn serve(hub: &Arc<Hub>, s: &Arc<Session>, c: &mut crate::federation::v2::Client, tasks: &mut JoinSet<()>, session: &CancellationToken, status: &crate::link::ConnStatus) -> String {
    let sub = match subscribe(hub, s, c, tasks).await {
        Ok(sub) => sub,
        Err(e) => return e,
    };
    status.up();
    tracing::info!(outgoing = %lock(&s.name), remote = %s.remote, "hub outgoing connection up");
    send(hub, s, c, tasks, session);
    health(hub, s, c, tasks, session, sub).await
}

/// ClientEventStream (what the remote side sends is routed) and ServerFederateGroupsStream
/// until SERVING (its group advertisements kept); the Subscription used.
async fn subscribe(hub: &Arc<Hub>, s: &Arc<Session>, c: &mut crate::federation::v2::Client, tasks: &mut JoinSet<()>) -> Result<Subscription, String> {
    let ident = Identity { name: lock(&s.name).clone(), uid: crate::cot::random_uid(), description: format!("takgate hub {}", env!("CARGO_PKG_VERSION")), r#type: fig_identity::ConnectionType::FederationHubClient as i32, server_id: hub.id.clone() };
    let sub = Subscription { identity: Some(ident.clone()), filter: String::new(), version: Some(TakServerVersion { major: 5, minor: 5, patch: 0, branch: "takgate-hub".into(), variant: env!("CARGO_PKG_VERSION").into() }) };
    // Events from the remote side.
    let (mut events, h, me) = (c.clone(), hub.clone(), s.clone());
    let sub2 = sub.clone();
    tasks.spawn(async move {
        let Ok(r) = events.client_event_stream(sub2).await else { return me.cancel.cancel() };
        let mut st = r.into_inner();
        while let Ok(Some(fe)) = st.message().await {
            if fe.event.is_some() || fe.contact.is_some() {
                h.route_event(&me, fe).deliver(&h).await;
            }
        }
        me.cancel.cancel();
    });
    let mut groups = match tokio::time::timeout(Duration::from_secs(30), c.server_federate_groups_stream(Subscription { version: None, ..sub.clone() })).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(st)) => return Err(crate::federation::v2::describe_status("ServerFederateGroupsStream", &st)),
        Err(_) => return Err("no answer on ServerFederateGroupsStream within 30 s".into()),
    };
    // Wait for SERVING, then send.
    let serving = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match groups.message().await {
                Ok(Some(g)) => {
                    if !g.federate_groups.is_empty() {
                        *lock(&s.advertised) = g.federate_groups.clone();
                    }
                    if g.stream_update.is_some_and(|u| u.status == server_health::ServingStatus::Serving as i32) {
                        return Ok(());
                    }
                }
                Ok(None) => return Err("the groups stream ended before SERVING".to_string()),
                Err(st) => return Err(crate::federation::v2::describe_status("ServerFederateGroupsStream", &st)),
            }
        }
    })
    .await;
    match serving {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("no SERVING on the groups stream within 30 s".into()),
    }
    // Later group advertisements of the remote side.
    let (h, me) = (hub.clone(), s.clone());
    tasks.spawn(async move {
        while let Ok(Some(g)) = groups.message().await {
            *lock(&me.advertised) = g.federate_groups;
            let p = h.policy();
            let m = me.member(&p);
            for (o, om) in h.members(&p).iter() {
                if o.serial != me.serial && p.reaches_at_all(&m, om) {
                    h.push_groups(o);
                }
            }
        }
    });
    Ok(sub)
}

/// ServerEventStream (an empty event, the contacts that reach it, then live) and our groups
/// on ClientFederateGroupsStream.
fn send(hub: &Arc<Hub>, s: &Arc<Session>, c: &crate::federation::v2::Client, tasks: &mut JoinSet<()>, session: &CancellationToken) {
    let (etx, erx) = mpsc::channel::<FederatedEvent>(hub.queue_depth);
    lock(&s.streams).events = Some(etx);
    let mut first = vec![FederatedEvent::default()];
    first.extend(hub.contacts_for(s));
    let out = requests(first, erx, session.clone());
    let mut sender = c.clone();
    tasks.spawn(async move {
        let _ = sender.server_event_stream(out).await;
    });
    let (gtx, grx) = mpsc::channel::<FederateGroups>(64);
    lock(&s.streams).groups = Some(gtx);
    let ours = FederateGroups { federate_groups: hub.groups_for(s), ..Default::default() };
    let mut gsender = c.clone();
    let gout = requests(vec![ours], grx, session.clone());
    tasks.spawn(async move {
        let _ = gsender.client_federate_groups_stream(gout).await;
    });
    let (btx, brx) = mpsc::channel::<BinaryBlob>(256);
    lock(&s.streams).blobs = Some(btx);
    let bout = requests(vec![], brx, session.clone());
    let mut bsender = c.clone();
    tasks.spawn(async move {
        let _ = bsender.binary_message_stream(bout).await;
    });
}

/// Health checks every 3 s until the connection ends; the ROL streams after the first
/// SERVING answer.
async fn health(hub: &Arc<Hub>, s: &Arc<Session>, c: &mut crate::federation::v2::Client, tasks: &mut JoinSet<()>, session: &CancellationToken, sub: Subscription) -> String {
    let mut rol_open = false;
    loop {
        let h = tokio::select! {
            _ = session.cancelled() => return "closed".into(),
            r = tokio::time::timeout(HEALTH_EVERY * 3, c.health_check(ClientHealth { status: client_health::ServingStatus::Serving as i32 })) => r,
        };
        match h {
            Ok(Ok(r)) if r.get_ref().status == server_health::ServingStatus::Serving as i32 => {
                *lock(&s.last_health) = Instant::now();
                if !rol_open {
                    rol_open = true;
                    open_rol(hub, s, c, tasks, session, sub.clone());
                }
            }
            Ok(Ok(r)) => tracing::debug!(outgoing = %lock(&s.name), status = r.get_ref().status, "health check not SERVING yet"),
            Ok(Err(st)) => return crate::federation::v2::describe_status("HealthCheck", &st),
            // A hub with health checks off never answers: the connection itself tells.
            Err(_) => {}
        }
        tokio::select! {
            _ = session.cancelled() => return "closed".into(),
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
        }
    }
}

/// The ROL streams of an outgoing connection: what the remote side sends is routed; what
/// the policy sends it (what it missed first) goes on ServerROLStream.
fn open_rol(hub: &Arc<Hub>, s: &Arc<Session>, c: &crate::federation::v2::Client, tasks: &mut JoinSet<()>, session: &CancellationToken, sub: Subscription) {
    let (mut incoming, h, me) = (c.clone(), hub.clone(), s.clone());
    tasks.spawn(async move {
        let Ok(r) = incoming.client_rol_stream(sub).await else { return };
        let mut st = r.into_inner();
        while let Ok(Some(rol)) = st.message().await {
            h.route_rol(&me, rol);
        }
    });
    let (tx, rx) = mpsc::channel::<Rol>(hub.queue_depth);
    let replay = hub.open_rol(s, tx);
    let out = requests(replay, rx, session.clone());
    let mut sender = c.clone();
    tasks.spawn(async move {
        let _ = sender.server_rol_stream(out).await;
    });
}
