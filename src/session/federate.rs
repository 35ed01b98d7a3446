//! The rules of one federation v2 session (gRPC `FederatedChannel` on one HTTP/2
//! connection), with no I/O and no clock. The async code in [`crate::federation::v2`]
//! opens the calls this asks for, feeds in what they return and when they end, and sleeps
//! until [`ClientSession::poll_timeout`] / [`ServerSession::poll_timeout`].
//!
//! As client it follows TAK Server's own client (`TakFigClient`), and never waits on a
//! call that a TAK Server answers late or not at all:
//!
//! * open ServerFederateGroupsStream, ClientFederateGroupsStream, ClientEventStream (with
//!   a version, or TAK never answers health checks) and ServerROLStream at once, without
//!   waiting for any reply: grpc-java sends response headers with the first message, and a
//!   TAK Server sends nothing on ClientEventStream until ServerEventStream is open;
//! * open ServerEventStream when the groups stream says SERVING (or is UNIMPLEMENTED);
//! * health checks every interval, one at a time; a reply other than SERVING ends the
//!   session; the first SERVING opens ClientROLStream and starts mission delivery; a SERVING
//!   reply confirms the mission changes written before its check was sent;
//! * a peer that has answered health checks and then leaves one unanswered past the
//!   timeout is gone; a peer that never answers (a Federation Hub with health checks off)
//!   is tolerated, and ClientROLStream is opened anyway after the timeout;
//! * ClientROLStream ending normally (a hub after its replay) is reopened, not fatal; any
//!   other stream ending ends the session.
//!
//! As server it follows TAK Server's `FederationServer`: SERVING first on the groups
//! stream (the I/O layer sends it), NOT_CONNECTED to health checks before ClientEventStream,
//! DEADLINE_EXCEEDED on the outbound streams after the health timeout without a check
//! (then the connection closes), and a failed inbound stream ends the session.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The calls of `FederatedChannel` a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    ServerFederateGroups,
    ClientFederateGroups,
    ClientEvents,
    ServerEvents,
    ClientRol,
    ServerRol,
    HealthCheck,
}

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::ServerFederateGroups => "ServerFederateGroupsStream",
            Call::ClientFederateGroups => "ClientFederateGroupsStream",
            Call::ClientEvents => "ClientEventStream",
            Call::ServerEvents => "ServerEventStream",
            Call::ClientRol => "ClientROLStream",
            Call::ServerRol => "ServerROLStream",
            Call::HealthCheck => "HealthCheck",
        }
    }
}

/// How a call (or its response stream) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The peer completed it normally.
    Completed,
    /// The peer does not have this method.
    Unimplemented,
    /// An error status, described for the operator.
    Failed(String),
}

/// A health reply, as the server's `ServingStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Serving,
    NotServing,
    NotConnected,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "UNKNOWN",
            Health::Serving => "SERVING",
            Health::NotServing => "NOT_SERVING",
            Health::NotConnected => "NOT_CONNECTED",
        }
    }
}

/// What the client's I/O layer is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open this call (for HealthCheck: send one check, asked at the given time).
    Open(Call),
    /// Send our outbound group names on ClientFederateGroupsStream.
    SendGroups,
    /// Start delivering the mission queue on ServerROLStream.
    StartDelivery,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// Whether we have outbound groups to announce.
    pub send_groups: bool,
}

#[derive(Debug)]
pub struct ClientSession {
    cfg: ClientConfig,
    actions: VecDeque<Action>,
    server_events_open: bool,
    /// A check is out since this time.
    outstanding: Option<Instant>,
    next_check: Instant,
    /// The peer answered at least one check (it does health checks).
    answered: bool,
    healthy: bool,
    rol_open: bool,
    rol_reopen_at: Option<Instant>,
    silent_warned: bool,
    closed: Option<String>,
}

impl ClientSession {
    pub fn new(cfg: ClientConfig, now: Instant) -> ClientSession {
        let actions = [Call::ServerFederateGroups, Call::ClientFederateGroups, Call::ClientEvents, Call::ServerRol].into_iter().map(Action::Open).collect();
        ClientSession { next_check: now + cfg.health_interval, cfg, actions, server_events_open: false, outstanding: None, answered: false, healthy: false, rol_open: false, rol_reopen_at: None, silent_warned: false, closed: None }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Why the session ended, once it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    fn close(&mut self, why: impl Into<String>) {
        if self.closed.is_none() {
            self.closed = Some(why.into());
        }
    }

    fn open_server_events(&mut self) {
        if !self.server_events_open {
            self.server_events_open = true;
            self.actions.push_back(Action::Open(Call::ServerEvents));
            if self.cfg.send_groups {
                self.actions.push_back(Action::SendGroups);
            }
        }
    }

    fn open_rol(&mut self) {
        if !self.rol_open {
            self.rol_open = true;
            self.rol_reopen_at = None;
            self.actions.push_back(Action::Open(Call::ClientRol));
        }
    }

    /// A message on ServerFederateGroupsStream; `serving` when its streamUpdate is SERVING.
    pub fn handle_groups(&mut self, serving: bool) {
        if serving {
            self.open_server_events();
        }
    }

    /// A health reply; the time its check was sent when it confirms what was written
    /// before (a SERVING reply).
    pub fn handle_health(&mut self, h: Health, _now: Instant) -> Option<Instant> {
        let asked = self.outstanding.take();
        self.answered = true;
        if h != Health::Serving {
            self.close(format!("health check answered {}", h.name()));
            return None;
        }
        if !self.healthy {
            self.healthy = true;
            self.open_rol();
            self.actions.push_back(Action::StartDelivery);
        }
        asked
    }

    /// A call, or its response stream, ended.
    pub fn handle_end(&mut self, call: Call, end: End, now: Instant) {
        match (call, end) {
            // An old server without the groups stream: go ahead, as TAK's client does.
            (Call::ServerFederateGroups, End::Unimplemented) => self.open_server_events(),
            (Call::ClientFederateGroups, End::Unimplemented) => {}
            // A hub completes ClientROLStream after its replay: open it again.
            (Call::ClientRol, End::Completed) => {
                self.rol_open = false;
                self.rol_reopen_at = Some(now + self.cfg.health_interval);
            }
            (Call::HealthCheck, End::Failed(e)) => {
                self.outstanding = None;
                self.close(e);
            }
            (c, End::Completed) => self.close(format!("{} was ended by the server", c.name())),
            (c, End::Unimplemented) => self.close(format!("{}: not implemented by the peer", c.name())),
            (_, End::Failed(e)) => self.close(e),
        }
    }

    pub fn poll_timeout(&self) -> Instant {
        let mut t = match self.outstanding {
            Some(asked) => asked + self.cfg.health_timeout,
            None => self.next_check,
        };
        if let Some(r) = self.rol_reopen_at {
            t = t.min(r);
        }
        t
    }

    /// Whether the peer left a health check unanswered for the timeout without ever
    /// answering one (a Federation Hub with health checks off).
    pub fn peer_is_silent(&self) -> bool {
        self.silent_warned
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.rol_reopen_at.is_some_and(|t| now >= t) {
            self.open_rol();
        }
        match self.outstanding {
            Some(asked) if now >= asked + self.cfg.health_timeout => {
                if self.answered {
                    let secs = self.cfg.health_timeout.as_secs_f64();
                    self.close(format!("HealthCheck: no answer within {secs:.0} s (is the peer alive? a slow link may need a higher health_timeout_secs)"));
                    return;
                }
                // Never answered: a peer with health checks off. Keep the session, ask again,
                // and let mission traffic flow without the first healthy check.
                self.outstanding = None;
                self.next_check = now;
                if !self.silent_warned {
                    self.silent_warned = true;
                    self.open_rol();
                    self.actions.push_back(Action::StartDelivery);
                }
            }
            Some(_) => {}
            None if now >= self.next_check => {
                // One check at a time; the next is due an interval after this one was sent.
                self.outstanding = Some(now);
                self.next_check = now + self.cfg.health_interval;
                self.actions.push_back(Action::Open(Call::HealthCheck));
            }
            None => {}
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub health_timeout: Duration,
}

/// How long a session whose streams expired stays up before the connection closes.
const CLOSE_AFTER_EXPIRY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct ServerSession {
    cfg: ServerConfig,
    events_open: bool,
    rol_open: bool,
    last_health: Instant,
    /// When we answered the last SERVING check.
    last_answer: Option<Instant>,
    expired: bool,
    close_at: Option<Instant>,
    closed: Option<String>,
}

impl ServerSession {
    pub fn new(cfg: ServerConfig, now: Instant) -> ServerSession {
        ServerSession { cfg, events_open: false, rol_open: false, last_health: now, last_answer: None, expired: false, close_at: None, closed: None }
    }

    /// ClientEventStream opened (again): the health clock starts now.
    pub fn handle_events_open(&mut self, now: Instant) {
        self.events_open = true;
        self.expired = false;
        self.last_health = now;
    }

    pub fn handle_rol_open(&mut self, now: Instant) {
        self.rol_open = true;
        if !self.events_open {
            self.last_health = now;
        }
    }

    /// An outbound stream the federate held went away.
    pub fn handle_outbound_gone(&mut self, call: Call) {
        match call {
            Call::ClientEvents => self.events_open = false,
            Call::ClientRol => self.rol_open = false,
            _ => {}
        }
    }

    /// A health check: the answer, and the time before which what we wrote is confirmed
    /// (the client asks again only after our previous answer arrived, and that answer went
    /// after everything written before it).
    pub fn handle_health(&mut self, client_serving: bool, now: Instant) -> (Health, Option<Instant>) {
        if !self.events_open {
            return (Health::NotConnected, None);
        }
        if !client_serving {
            return (Health::NotServing, None);
        }
        self.last_health = now;
        (Health::Serving, self.last_answer.replace(now))
    }

    /// An inbound stream of the federate ended: the session ends with it (TAK would keep
    /// writing into a stream nobody reads).
    pub fn handle_inbound_end(&mut self, call: Call, end: End) {
        let why = match end {
            End::Completed => format!("{} was ended by the federate", call.name()),
            End::Unimplemented => format!("{}: not implemented", call.name()),
            End::Failed(e) => format!("{}: {e}", call.name()),
        };
        self.closed.get_or_insert(why);
    }

    /// The outbound streams ended with DEADLINE_EXCEEDED (no health check in time).
    pub fn expired(&self) -> bool {
        self.expired
    }

    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(t) = self.close_at {
            return Some(t);
        }
        (self.events_open || self.rol_open).then_some(self.last_health + self.cfg.health_timeout)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = self.close_at {
            if now >= t {
                let secs = self.cfg.health_timeout.as_secs_f64();
                self.closed.get_or_insert(format!("no health check for {secs:.0} s"));
            }
            return;
        }
        if (self.events_open || self.rol_open) && now >= self.last_health + self.cfg.health_timeout {
            self.expired = true;
            self.events_open = false;
            self.rol_open = false;
            self.close_at = Some(now + CLOSE_AFTER_EXPIRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn client(now: Instant) -> ClientSession {
        ClientSession::new(ClientConfig { health_interval: 3 * S, health_timeout: 10 * S, send_groups: true }, now)
    }

    fn actions(c: &mut ClientSession) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    #[test]
    fn client_opens_everything_at_once_and_server_events_on_serving() {
        let t0 = Instant::now();
        let mut c = client(t0);
        let open = |c: Call| Action::Open(c);
        assert_eq!(actions(&mut c), [open(Call::ServerFederateGroups), open(Call::ClientFederateGroups), open(Call::ClientEvents), open(Call::ServerRol)]);
        c.handle_groups(false);
        assert!(actions(&mut c).is_empty());
        c.handle_groups(true);
        assert_eq!(actions(&mut c), [open(Call::ServerEvents), Action::SendGroups]);
        c.handle_groups(true);
        assert!(actions(&mut c).is_empty(), "once");
        // an old server without the groups stream
        let mut c = client(t0);
        actions(&mut c);
        c.handle_end(Call::ServerFederateGroups, End::Unimplemented, t0);
        assert_eq!(actions(&mut c)[0], open(Call::ServerEvents));
    }

    #[test]
    fn health_checks_one_at_a_time_and_the_first_serving_opens_rol() {
        let t0 = Instant::now();
        let mut c = client(t0);
        actions(&mut c);
        assert_eq!(c.poll_timeout(), t0 + 3 * S);
        c.handle_timeout(t0 + 3 * S);
        assert_eq!(actions(&mut c), [Action::Open(Call::HealthCheck)]);
        // while it is out, nothing else is sent
        c.handle_timeout(t0 + 7 * S);
        assert!(actions(&mut c).is_empty());
        assert_eq!(c.handle_health(Health::Serving, t0 + 8 * S), Some(t0 + 3 * S), "confirms what was written before the check");
        assert_eq!(actions(&mut c), [Action::Open(Call::ClientRol), Action::StartDelivery]);
        // the next check is an interval after the last one was sent
        assert_eq!(c.poll_timeout(), t0 + 6 * S);
        c.handle_timeout(t0 + 8 * S);
        assert_eq!(actions(&mut c), [Action::Open(Call::HealthCheck)]);
        c.handle_health(Health::Serving, t0 + 9 * S);
        assert!(actions(&mut c).is_empty(), "ROL opens once");
        c.handle_timeout(t0 + 11 * S);
        actions(&mut c);
        c.handle_health(Health::NotConnected, t0 + 12 * S);
        assert_eq!(c.closed(), Some("health check answered NOT_CONNECTED"));
    }

    #[test]
    fn a_peer_that_answered_and_stops_is_gone_one_that_never_answers_is_tolerated() {
        let t0 = Instant::now();
        let mut c = client(t0);
        actions(&mut c);
        c.handle_timeout(t0 + 3 * S);
        c.handle_health(Health::Serving, t0 + 4 * S);
        c.handle_timeout(t0 + 6 * S);
        actions(&mut c);
        c.handle_timeout(t0 + 15 * S);
        assert!(c.closed().is_none());
        c.handle_timeout(t0 + 16 * S);
        assert!(c.closed().unwrap().contains("no answer within 10 s"));
        // never answered: after the timeout ROL opens anyway, and the session stays
        let mut c = client(t0);
        actions(&mut c);
        c.handle_timeout(t0 + 3 * S);
        actions(&mut c);
        c.handle_timeout(t0 + 13 * S);
        assert!(c.closed().is_none() && c.peer_is_silent());
        assert_eq!(actions(&mut c), [Action::Open(Call::ClientRol), Action::StartDelivery]);
        c.handle_timeout(t0 + 40 * S);
        assert!(c.closed().is_none());
    }

    #[test]
    fn rol_completed_by_a_hub_is_reopened_other_ends_are_fatal() {
        let t0 = Instant::now();
        let mut c = client(t0);
        actions(&mut c);
        c.handle_timeout(t0 + 3 * S);
        c.handle_health(Health::Serving, t0 + 3 * S);
        actions(&mut c);
        c.handle_end(Call::ClientRol, End::Completed, t0 + 4 * S);
        assert!(c.closed().is_none());
        assert_eq!(c.poll_timeout(), t0 + 6 * S);
        c.handle_timeout(t0 + 7 * S);
        assert!(actions(&mut c).contains(&Action::Open(Call::ClientRol)));
        c.handle_end(Call::ClientEvents, End::Completed, t0 + 8 * S);
        assert_eq!(c.closed(), Some("ClientEventStream was ended by the server"));
        let mut c = client(t0);
        c.handle_end(Call::ClientRol, End::Failed("ClientROLStream: connection lost".into()), t0);
        assert_eq!(c.closed(), Some("ClientROLStream: connection lost"));
    }

    fn server(now: Instant) -> ServerSession {
        ServerSession::new(ServerConfig { health_timeout: 15 * S }, now)
    }

    #[test]
    fn server_answers_not_connected_before_client_events_then_serving() {
        let t0 = Instant::now();
        let mut s = server(t0);
        assert_eq!(s.handle_health(true, t0), (Health::NotConnected, None));
        s.handle_events_open(t0);
        assert_eq!(s.handle_health(false, t0 + S), (Health::NotServing, None));
        assert_eq!(s.handle_health(true, t0 + 3 * S), (Health::Serving, None));
        assert_eq!(s.handle_health(true, t0 + 6 * S), (Health::Serving, Some(t0 + 3 * S)), "the previous answer confirms");
    }

    #[test]
    fn server_expires_streams_without_health_then_closes() {
        let t0 = Instant::now();
        let mut s = server(t0);
        assert_eq!(s.poll_timeout(), None);
        s.handle_events_open(t0);
        s.handle_health(true, t0 + 5 * S);
        assert_eq!(s.poll_timeout(), Some(t0 + 20 * S));
        s.handle_timeout(t0 + 19 * S);
        assert!(!s.expired());
        s.handle_timeout(t0 + 20 * S);
        assert!(s.expired() && s.closed().is_none());
        assert_eq!(s.poll_timeout(), Some(t0 + 22 * S));
        s.handle_timeout(t0 + 22 * S);
        assert_eq!(s.closed(), Some("no health check for 15 s"));
    }

    #[test]
    fn a_failed_inbound_stream_ends_the_server_session() {
        let mut s = server(Instant::now());
        s.handle_inbound_end(Call::ServerEvents, End::Failed("stream reset".into()));
        assert_eq!(s.closed(), Some("ServerEventStream: stream reset"));
    }
}
