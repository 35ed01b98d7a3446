//! HTTPS for the services takgate serves (the admin API, the Marti file API): each
//! accepted connection's TLS handshake off the accept loop (with a time limit), then
//! HTTP/1.1 to an axum app that sees the client certificate's CN as an extension.

use std::time::Duration;

use axum::{Extension, Router};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The CN of the client certificate a connection presented ("" without one).
#[derive(Clone, Debug, Default)]
pub struct ClientCn(pub String);

const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` over TLS until `cancel`; `what` names the service in logs.
pub async fn serve(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router, what: &'static str, cancel: CancellationToken, tracker: TaskTracker) {
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, cancel) = (acceptor.clone(), app.clone(), cancel.clone());
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, "{what}: TLS handshake refused: {}", super::tls::explain_accept_error(&e));
                    return;
                }
                Err(_) => return,
            };
            let cn = super::tls::identity(tls.get_ref().1.peer_certificates()).map(|i| i.cn).unwrap_or_default();
            let svc = hyper_util::service::TowerToHyperService::new(app.layer(Extension(ClientCn(cn))));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}
