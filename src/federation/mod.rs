//! TAK Server federation: the messages of `fig.proto` (shared by v1 frames and the v2 gRPC
//! service), GeoEvent <-> CotEvent conversion, the v1 link (length-prefixed frames on 9000)
//! and the v2 link (gRPC `FederatedChannel` on 9001), both roles, and the staged
//! connection test.

pub mod convert;
pub mod fig;
pub mod probe;
pub mod shared;
pub mod v1;
pub mod v2;

use std::sync::Arc;

use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{FedLink, FedVersion, LinkConfig, Role};
use crate::link::connect::{Connector, Dial};
use crate::link::listen::{Accept, Handler, Limits};
use crate::link::{tls, Backoff, ConnStatus, LinkCtx, LinkStatus, StartError};
use crate::missions::Missions;
use shared::FedSettings;

/// Starts a federation link (v1 or v2, listening or connecting).
pub async fn start(l: &LinkConfig, f: &FedLink, ctx: &LinkCtx, missions: &Arc<Missions>) -> Result<LinkStatus, StartError> {
    let err = |e: String| StartError::new(&l.name, e);
    let settings = Arc::new(FedSettings::from_config(l, f, ctx).map_err(err)?);
    let v2 = matches!(f.version, FedVersion::V2(_));
    check_chain(f).map_err(err)?;
    let alpn: &[&[u8]] = if v2 { &[b"h2"] } else { &[] };
    let proto = if v2 { "federation v2" } else { "federation v1" };
    let mut status = LinkStatus { name: l.name.clone(), transport: l.transport(), mode: l.mode(), address: l.address(), local_addr: None, counters: settings.counters.clone(), connection: None };
    match &f.role {
        Role::Listen { address, limits, tls: tl } => {
            let handler: Arc<dyn Handler> = if v2 { v2::Shared::new(settings.clone(), ctx.router.clone(), Some(missions.clone()), None) } else { Arc::new(v1::V1Handler { s: settings.clone(), router: ctx.router.clone() }) };
            let acceptor = TlsAcceptor::from(Arc::new(tls::server_for_required(&f.tls, true, alpn).map_err(|e| err(e.to_string()))?));
            let accept = Accept::Tls { acceptor, handshake_timeout: tls::handshake_timeout(&f.tls) };
            let backlog = limits.listen_backlog.map(|c| c.0 as u32).unwrap_or(crate::link::listen::DEFAULT_BACKLOG);
            let limits = Arc::new(Limits::for_listener(limits, Some(tl), &l.name));
            status.local_addr = Some(crate::link::listen::spawn(ctx, &l.name, *address, limits, settings.counters.clone(), accept, handler, backlog)?);
            tracing::info!(link = %l.name, address = ?status.local_addr, "{proto}: listening");
        }
        Role::Connect { address, reconnect, tls: tc } => {
            let conn = Arc::new(ConnStatus::default());
            status.connection = Some(conn.clone());
            let handler: Arc<dyn Handler> = if v2 {
                let server_id = missions.store.server_by_name(&l.name).ok().flatten().map(|s| s.id);
                let sh = v2::Shared::new(settings.clone(), ctx.router.clone(), Some(missions.clone()), server_id);
                *crate::sync::lock(&sh.status) = Some(conn.clone());
                sh
            } else {
                Arc::new(v1::V1Handler { s: settings.clone(), router: ctx.router.clone() })
            };
            let connector = TlsConnector::from(Arc::new(tls::client_for(&f.tls, alpn).map_err(|e| err(e.to_string()))?));
            let dial = Dial::Tls { connector, server_name: tls::server_name(address, tc), handshake_timeout: tls::handshake_timeout(&f.tls) };
            let c = Connector { link: l.name.clone(), address: address.clone(), dial, backoff: Backoff::from_config(reconnect, 1.0, 60.0), status: conn };
            tracing::info!(link = %l.name, %address, "{proto}: connecting");
            ctx.tracker.spawn(crate::link::connect::run(c, handler, ctx.cancel.clone()));
        }
    }
    Ok(status)
}

/// TAK Server and its Federation Hub read the certificate a federate presents at index 0
/// (its leaf) and index 1 (its issuer): a chain with the leaf alone fails every call there
/// ("Client identification not available"). Refuse to start such a link, with the reason.
fn check_chain(f: &FedLink) -> Result<(), String> {
    let (ca, cert, _) = f.files();
    presented_chain(ca, cert).map(|_| ())
}

/// How many certificates we present with `cert` (the issuers found in `ca` appended);
/// an error when only the leaf: TAK Server and its Federation Hub read the second one.
pub(crate) fn presented_chain(ca: &std::path::Path, cert: &std::path::Path) -> Result<usize, String> {
    let chain = tls::chain(cert, Some(ca)).map_err(|e| e.to_string())?;
    if chain.len() < 2 {
        return Err(format!(
            "our certificate chain ({}) has only the leaf: TAK Server and its Federation Hub need the leaf and its issuing CA (they read the second certificate); put the issuing CA after the leaf in the cert file, or in ca",
            cert.display()
        ));
    }
    Ok(chain.len())
}
