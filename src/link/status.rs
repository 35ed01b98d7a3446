//! The state of an outgoing connection (or a multicast join), for operators and the admin
//! API: an enum, the last error in words, when it last came up, how often.

use serde::Serialize;

use crate::cot::CotTime;
use crate::sync::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Connecting,
    Connected,
    /// Waiting to reconnect.
    Waiting,
    Error,
    #[default]
    Stopped,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Waiting => "waiting",
            LinkState::Error => "error",
            LinkState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ConnState {
    pub state: LinkState,
    pub last_error: Option<String>,
    /// When the current or last connection came up.
    pub last_connected: Option<CotTime>,
    pub connects: u64,
}

/// A [`ConnState`] shared by a connector and whoever reads it.
#[derive(Debug, Default)]
pub struct ConnStatus(std::sync::Mutex<ConnState>);

impl ConnStatus {
    pub fn get(&self) -> ConnState {
        lock(&self.0).clone()
    }
    pub fn set(&self, f: impl FnOnce(&mut ConnState)) {
        f(&mut lock(&self.0));
    }
    pub fn state(&self, s: LinkState) {
        self.set(|c| c.state = s);
    }
    /// Came up now (the last error is kept: it says why the previous session ended).
    pub fn up(&self) {
        self.set(|c| {
            c.state = LinkState::Connected;
            c.last_connected = Some(CotTime::now());
            c.connects += 1;
        });
    }
    pub fn error(&self, e: impl Into<String>) {
        let e = e.into();
        self.set(|c| {
            c.state = LinkState::Error;
            c.last_error = Some(e);
        });
    }
    /// Keeps the state, records why the last session ended.
    pub fn note_error(&self, e: impl Into<String>) {
        let e = e.into();
        self.set(|c| c.last_error = Some(e));
    }
}
