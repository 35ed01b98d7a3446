//! Outgoing stream links: connect, secure (TLS with our certificate, bounded by a
//! timeout), run the link's handler on the connection, and reconnect with the backoff
//! when it ends, until the link stops. The connection state is kept for operators.
//! Transports that are not TCP (QUIC) bring their own [`Dialer`] and keep the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use super::backoff::{Attempts, Backoff};
use super::peer::PeerIdentity;
use super::listen::{tune, Conn, Handler};
use super::status::{ConnStatus, LinkState};
use super::tls;

/// How a dialled connection is made and secured.
#[derive(Clone)]
pub enum Dial {
    Plain,
    Tls { connector: TlsConnector, server_name: String, handshake_timeout: Duration },
    /// Another transport's own way (QUIC: a handshake and a stream).
    Custom(Arc<dyn Dialer>),
}

/// A connection made by a [`Dialer`].
pub struct Dialled {
    pub io: Box<dyn super::Io>,
    pub remote: String,
    pub identity: Option<PeerIdentity>,
}

/// Makes one connection to `address`, or says why it could not (for the log and status).
pub trait Dialer: Send + Sync + 'static {
    fn dial<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Dialled, String>>;
}

/// An outgoing stream link.
pub struct Connector {
    pub link: String,
    pub address: String,
    pub dial: Dial,
    pub backoff: Backoff,
    pub status: Arc<ConnStatus>,
}

/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects and keeps reconnecting until `cancel`.
pub async fn run(c: Connector, handler: Arc<dyn Handler>, cancel: CancellationToken) {
    let mut attempts = Attempts::new(c.backoff);
    while !cancel.is_cancelled() {
        let started = Instant::now();
        c.status.state(LinkState::Connecting);
        match once(&c, &handler, &cancel).await {
            Ok(()) => c.status.state(LinkState::Waiting),
            Err(Fatal(e)) => {
                tracing::error!(link = %c.link, "{e}: not reconnecting");
                c.status.error(e);
                return;
            }
        }
        let delay = attempts.next_delay(started.elapsed());
        tracing::info!(link = %c.link, address = %c.address, delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    c.status.state(LinkState::Stopped);
}

/// An error that retrying cannot mend (a server name that is not one).
struct Fatal(String);

/// One connection attempt and its session; failures to connect are recorded in the status.
async fn once(c: &Connector, handler: &Arc<dyn Handler>, cancel: &CancellationToken) -> Result<(), Fatal> {
    let failed = |what: String| {
        tracing::warn!(link = %c.link, address = %c.address, "{what}");
        c.status.error(what);
        Ok(())
    };
    if let Dial::Custom(d) = &c.dial {
        let Dialled { io, remote, identity } = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = d.dial(&c.address) => match r {
                Ok(d) => d,
                Err(e) => return failed(e),
            },
        };
        c.status.up();
        handler.clone().run(Conn { io, remote, identity, cancel: cancel.clone() }).await;
        return Ok(());
    }
    let tcp = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&c.address)) => match r {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return failed(format!("connect failed: {e}")),
            Err(_) => return failed("connect timed out".into()),
        },
    };
    tune(&tcp);
    let remote = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| c.address.clone());
    let (io, identity): (Box<dyn super::Io>, _) = match &c.dial {
        Dial::Plain | Dial::Custom(_) => (Box::new(tcp), None),
        Dial::Tls { connector, server_name, handshake_timeout } => {
            let name = rustls::pki_types::ServerName::try_from(server_name.clone()).map_err(|e| Fatal(format!("bad server name {server_name:?}: {e}")))?;
            match tokio::time::timeout(*handshake_timeout, connector.connect(name, tcp)).await {
                Ok(Ok(s)) => {
                    let id = tls::identity(s.get_ref().1.peer_certificates());
                    (Box::new(s), id)
                }
                Ok(Err(e)) => return failed(format!("TLS handshake failed: {e}")),
                Err(_) => return failed("TLS handshake timed out".into()),
            }
        }
    };
    c.status.up();
    handler.clone().run(Conn { io, remote, identity, cancel: cancel.clone() }).await;
    Ok(())
}
