//! Cluster membership: what each node announces on the cluster exchange (`members.<node>`)
//! and what a node knows of the others, for its bindings and for `GET /api/cluster`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::sync::lock;

/// A member's queue and what it binds: enough to bind its queue to another node's exchange.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Known {
    pub node: String,
    pub queue: String,
    pub bind_keys: Vec<String>,
}

/// One node's announcement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Announce {
    #[serde(flatten)]
    pub me: Known,
    /// Sent on connect: members that hear it announce themselves at once.
    #[serde(default)]
    pub hello: bool,
    /// The node is leaving (a clean shutdown).
    #[serde(default)]
    pub leaving: bool,
    #[serde(default)]
    pub links: Vec<String>,
    #[serde(default)]
    pub clients: usize,
    #[serde(default)]
    pub events_in_per_s: f64,
    #[serde(default)]
    pub events_out_per_s: f64,
    /// The other members it knows (also those away whose queue still waits).
    #[serde(default)]
    pub known: Vec<Known>,
}

struct Entry {
    last: Announce,
    seen: Instant,
    seen_at: SystemTime,
}

/// What one cluster link knows of its cluster.
pub struct Directory {
    pub link: String,
    pub exchange: String,
    pub node: String,
    announce_every: Duration,
    own: Mutex<Option<Announce>>,
    members: Mutex<HashMap<String, Entry>>,
    /// Events in and out of the node's peers at the last announcement, for its rates.
    last_totals: Mutex<Option<(Instant, u64, u64)>>,
}

/// One member as `GET /api/cluster` shows it.
#[derive(Debug, Serialize)]
pub struct MemberView {
    pub node: String,
    /// `self`, `up` (announced within three intervals), `away` (its queue keeps what it
    /// misses until it expires) or `left` (shut down cleanly).
    pub state: &'static str,
    pub last_seen_secs: Option<f64>,
    pub queue: String,
    pub links: Vec<String>,
    pub clients: usize,
    pub events_in_per_s: f64,
    pub events_out_per_s: f64,
}

impl Directory {
    pub fn new(link: &str, exchange: &str, node: &str, announce_every: Duration) -> Directory {
        Directory { link: link.into(), exchange: exchange.into(), node: node.into(), announce_every, own: Mutex::default(), members: Mutex::default(), last_totals: Mutex::default() }
    }

    /// Records an announcement from another node; true when its queue or keys are new
    /// (bindings to make).
    pub fn note(&self, a: Announce) -> bool {
        let mut m = lock(&self.members);
        let fresh = m.get(&a.me.node).is_none_or(|e| e.last.me != a.me);
        m.insert(a.me.node.clone(), Entry { last: a, seen: Instant::now(), seen_at: SystemTime::now() });
        fresh
    }

    /// Learns of a member from another's list (it may be away); true when it is new.
    pub fn learn(&self, k: &Known) -> bool {
        if k.node == self.node {
            return false;
        }
        let mut m = lock(&self.members);
        if m.contains_key(&k.node) {
            return false;
        }
        let last = Announce { me: k.clone(), hello: false, leaving: false, links: vec![], clients: 0, events_in_per_s: 0.0, events_out_per_s: 0.0, known: vec![] };
        // Never heard from itself: as old as can be, so it shows as away.
        let now = Instant::now();
        m.insert(k.node.clone(), Entry { last, seen: now.checked_sub(self.announce_every * 3).unwrap_or(now), seen_at: SystemTime::UNIX_EPOCH });
        true
    }

    /// A member whose queue is gone (expired or deleted): forgotten.
    pub fn forget(&self, node: &str) {
        lock(&self.members).remove(node);
    }

    /// Members not heard from for longer than `expiry` (their queue has expired).
    pub fn expire(&self, expiry: Duration) {
        lock(&self.members).retain(|_, e| e.seen.elapsed() < expiry + self.announce_every);
    }

    pub fn known(&self) -> Vec<Known> {
        lock(&self.members).values().map(|e| e.last.me.clone()).collect()
    }

    /// Events per second in and out since the last call, from running totals.
    pub fn rates(&self, (events_in, events_out): (u64, u64)) -> (f64, f64) {
        let mut last = lock(&self.last_totals);
        let now = Instant::now();
        let r = match *last {
            Some((t, i, o)) if now > t => {
                let dt = (now - t).as_secs_f64();
                (events_in.saturating_sub(i) as f64 / dt, events_out.saturating_sub(o) as f64 / dt)
            }
            _ => (0.0, 0.0),
        };
        *last = Some((now, events_in, events_out));
        r
    }

    pub fn set_own(&self, a: Announce) {
        *lock(&self.own) = Some(a);
    }

    pub fn view(&self) -> Vec<MemberView> {
        let mut out = vec![];
        if let Some(a) = lock(&self.own).clone() {
            out.push(MemberView { node: a.me.node, state: "self", last_seen_secs: Some(0.0), queue: a.me.queue, links: a.links, clients: a.clients, events_in_per_s: a.events_in_per_s, events_out_per_s: a.events_out_per_s });
        }
        let mut others: Vec<MemberView> = lock(&self.members)
            .values()
            .map(|e| {
                let state = if e.last.leaving {
                    "left"
                } else if e.seen.elapsed() < self.announce_every * 3 {
                    "up"
                } else {
                    "away"
                };
                let last_seen_secs = (e.seen_at != SystemTime::UNIX_EPOCH).then(|| e.seen.elapsed().as_secs_f64());
                MemberView { node: e.last.me.node.clone(), state, last_seen_secs, queue: e.last.me.queue.clone(), links: e.last.links.clone(), clients: e.last.clients, events_in_per_s: e.last.events_in_per_s, events_out_per_s: e.last.events_out_per_s }
            })
            .collect();
        others.sort_by(|a, b| a.node.cmp(&b.node));
        out.extend(others);
        out
    }
}

/// The cluster links of one gateway.
#[derive(Default)]
pub struct Clusters(Mutex<Vec<Arc<Directory>>>);

impl Clusters {
    pub fn add(&self, d: Arc<Directory>) {
        let mut v = lock(&self.0);
        v.retain(|x| x.link != d.link);
        v.push(d);
    }
    pub fn all(&self) -> Vec<Arc<Directory>> {
        lock(&self.0).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(node: &str, keys: &[&str]) -> Announce {
        Announce { me: Known { node: node.into(), queue: format!("q.{node}"), bind_keys: keys.iter().map(|k| k.to_string()).collect() }, hello: false, leaving: false, links: vec![], clients: 1, events_in_per_s: 0.0, events_out_per_s: 0.0, known: vec![] }
    }

    #[test]
    fn members_are_new_once_and_again_when_their_keys_change() {
        let d = Directory::new("bus", "x", "n1", Duration::from_secs(5));
        assert!(d.note(ann("n2", &["cot.#"])));
        assert!(!d.note(ann("n2", &["cot.#"])));
        assert!(d.note(ann("n2", &["cot.Red.#"])));
        assert!(!d.learn(&ann("n2", &[]).me), "known already");
        assert!(!d.learn(&ann("n1", &[]).me), "itself");
        assert!(d.learn(&ann("n3", &["cot.#"]).me));
        let v = d.view();
        assert_eq!(v.iter().map(|m| (m.node.as_str(), m.state)).collect::<Vec<_>>(), [("n2", "up"), ("n3", "away")]);
    }
}
