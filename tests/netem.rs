//! Two takgates federated over v2 across a real lossy link: node B runs in its own network
//! namespace, joined to this one by a point-to-point link of two TUN devices whose packets
//! this test drops and delays (netem's job; this kernel has no sch_netem), and by a clean
//! veth pair for its clients. First 30 % loss and 500 ms delay each way, then the link cut (100 % loss)
//! and restored three times while mission changes keep coming. Every change must arrive
//! exactly once, in order per mission (checked in B's store and by B's client, which sees
//! each t-x-m-c once); CoT follows the link's policy; reconnect times are reported (also in
//! target/netem-report.txt). Needs root and ip (CI has them).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, gateway, pli, Client};
use takgate::certs::Authority;
use takgate::cot::{CotEvent, CotTime};

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A point-to-point link made of two TUN devices, one here and one in the namespace, with
/// this process forwarding packets between them: each packet is dropped with probability
/// `loss` and otherwise delivered `delay` later, in order. (The kernel here has no
/// sch_netem, so the test shapes the link itself, packet by packet, as netem would.)
struct Shaper {
    delay_ms: AtomicU64,
    /// Loss in parts per million.
    loss_ppm: AtomicU64,
    stop: AtomicBool,
    dropped: AtomicU64,
    passed: AtomicU64,
}

fn tun(name: &str) -> std::fs::File {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").expect("/dev/net/tun");
    let mut req = IfReq { name: [0; 16], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short, pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    const TUNSETIFF: libc::c_ulong = 0x400454ca;
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), TUNSETIFF as _, &mut req) };
    assert!(r == 0, "TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    f
}

/// Forwards packets read from `from` to `to` through the shaper (until it stops).
fn forward(from: std::fs::File, to: std::fs::File, sh: Arc<Shaper>) {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    let sh2 = sh.clone();
    std::thread::spawn(move || {
        let mut to = to;
        while let Ok((due, pkt)) = rx.recv() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let _ = to.write(&pkt);
            if sh2.stop.load(Relaxed) {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        let mut from = from;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&from);
        let mut buf = vec![0u8; 65536];
        while !sh.stop.load(Relaxed) {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
                continue;
            }
            let Ok(n) = from.read(&mut buf) else { return };
            if fastrand::u64(..1_000_000) < sh.loss_ppm.load(Relaxed) {
                sh.dropped.fetch_add(1, Relaxed);
                continue;
            }
            sh.passed.fetch_add(1, Relaxed);
            let due = Instant::now() + Duration::from_millis(sh.delay_ms.load(Relaxed));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
}

/// A namespace joined to this one by the shaped TUN link (`fed`, 10.77.n.0/24) and a
/// clean veth pair (10.78.n.0/24) for its clients.
struct Net {
    ns: String,
    n: u32,
    b: Option<Child>,
    shaper: Arc<Shaper>,
}

impl Net {
    fn new() -> Net {
        let n = std::process::id() % 200 + 20;
        let ns = format!("tgnetem{n}");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &format!("tca{n}")]).output();
        run(&["ip", "netns", "add", &ns]);
        let shaper = Arc::new(Shaper { delay_ms: AtomicU64::new(0), loss_ppm: AtomicU64::new(0), stop: AtomicBool::new(false), dropped: AtomicU64::new(0), passed: AtomicU64::new(0) });
        let net = Net { ns: ns.clone(), n, b: None, shaper: shaper.clone() };
        // The shaped link: two TUN devices, the second moved into the namespace.
        let (ta, tb) = (format!("tfa{n}"), format!("tfb{n}"));
        let fa = tun(&ta);
        let fb = tun(&tb);
        run(&["ip", "link", "set", &tb, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("10.77.{n}.1"), "peer", &format!("10.77.{n}.2"), "dev", &ta]);
        run(&["ip", "link", "set", &ta, "up"]);
        run(&["ip", "-n", &ns, "addr", "add", &format!("10.77.{n}.2"), "peer", &format!("10.77.{n}.1"), "dev", &tb]);
        run(&["ip", "-n", &ns, "link", "set", &tb, "up"]);
        forward(fa.try_clone().unwrap(), fb.try_clone().unwrap(), shaper.clone());
        forward(fb, fa, shaper);
        // The clean pair.
        let (a, b) = (format!("tca{n}"), format!("tcb{n}"));
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["ip", "link", "set", &b, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("10.78.{n}.1/24"), "dev", &a]);
        run(&["ip", "link", "set", &a, "up"]);
        run(&["ip", "-n", &ns, "addr", "add", &format!("10.78.{n}.2/24"), "dev", &b]);
        run(&["ip", "-n", &ns, "link", "set", &b, "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        net
    }

    fn b_fed(&self) -> String {
        format!("10.77.{}.2", self.n)
    }

    fn b_clean(&self) -> String {
        format!("10.78.{}.2", self.n)
    }

    /// Each direction of the federation link: `loss` (0..=1) and `delay`.
    fn shape(&self, loss: f64, delay_ms: u64) {
        self.shaper.loss_ppm.store((loss * 1_000_000.0) as u64, Relaxed);
        self.shaper.delay_ms.store(delay_ms, Relaxed);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.shaper.stop.store(true, Relaxed);
        if let Some(mut b) = self.b.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &format!("tca{}", self.n)]).output();
    }
}

fn to_mission(uid: &str, mission: &str, seq: u32) -> CotEvent {
    let now = CotTime::now();
    let mut ev = CotEvent::new(uid, "a-h-G", "h-g-i-g-o", CotTime(now.0 + seq as i64), 3600);
    ev.detail.xml = format!(r#"<marti><dest mission="{mission}"/></marti><remarks>seq={seq}</remarks>"#);
    ev
}

fn fed_state(a: &takgate::runtime::Gateway) -> (String, u64) {
    let links = a.control().links();
    let st = links.iter().find(|l| l.name == "fed").and_then(|l| l.connection.as_ref()).map(|c| c.get()).unwrap();
    (st.state.to_string(), st.connects)
}

/// What B's client has seen: t-x-m-c content uids (in order) and PLI uids.
#[derive(Default)]
struct Seen {
    announced: Vec<String>,
    cot: Vec<String>,
}

async fn collect(c: &mut Client, seen: &mut Seen, wait: Duration) {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        let Some(ev) = c.recv(Duration::from_millis(100)).await else { continue };
        if ev.cot_type == "t-x-m-c" {
            seen.announced.extend(takgate::missions::parse_announcement(&ev).into_iter().map(|c| c.content_uid));
        } else if !ev.cot_type.starts_with("t-x-") {
            seen.cot.push(ev.uid);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_v2_over_a_lossy_and_broken_link_delivers_every_mission_change_once_in_order() {
    assert!(nix_root(), "this test builds network namespaces: run it as root");
    let mut net = Net::new();
    let dir = std::env::temp_dir().join(format!("takgate-netem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = Authority::new(&dir, "netem CA").unwrap();
    let (bc, bk) = ca.leaf("node-b", &[&net.b_fed(), "localhost"]).unwrap();
    let (ac, ak) = ca.leaf("node-a", &["localhost"]).unwrap();
    let b_db = dir.join("b.db");
    let b_cfg = dir.join("b.toml");
    std::fs::write(
        &b_cfg,
        format!(
            "[node]\nid = \"node-b\"\n[store]\npath = \"{}\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"{}:8088\"\nidle_timeout_secs = 3600\n\
             [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"listen\"\naddress = \"{}:9001\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nhandshake_timeout_secs = 60\nhealth_timeout_secs = 45\n",
            b_db.display(),
            net.b_clean(),
            net.b_fed(),
            ca.ca.display(),
            bc.display(),
            bk.display()
        ),
    )
    .unwrap();
    net.shape(0.30, 500);
    let b_log = std::fs::File::create(dir.join("b.log")).unwrap();
    net.b = Some(Command::new("ip").args(["netns", "exec", &net.ns, env!("CARGO_BIN_EXE_takgate"), "run", "--config"]).arg(&b_cfg).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(b_log).spawn().unwrap());
    let b_client: std::net::SocketAddr = format!("{}:8088", net.b_clean()).parse().unwrap();
    assert!(common::listening(b_client, 10.0).await, "node B listens in its namespace");
    let mut beta = Client::tcp(b_client).await;

    // CoT policy on A's side of the link: sensor pings never cross.
    let t0 = Instant::now();
    let a = gateway(&format!(
        "[node]\nid = \"node-a\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nidle_timeout_secs = 3600\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"connect\"\naddress = \"{}:9001\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         reconnect_min_secs = 0.5\nreconnect_max_secs = 2\nhandshake_timeout_secs = 60\nhealth_timeout_secs = 30\npolicy = {{ types_deny = [\"b-m-p-s-p-i\"] }}\n",
        net.b_fed(),
        ca.ca.display(),
        ac.display(),
        ak.display()
    ))
    .await;
    let connected = eventually(240.0, || fed_state(&a).0 == "connected").await;
    assert!(connected, "A never connected across the lossy link: {:?}", fed_state(&a));
    let first_connect = t0.elapsed();
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    let mut report = vec![format!("lossy link (30% packet loss and 500 ms delay each way): first connection after {:.1} s", first_connect.as_secs_f64())];

    // Phase 1: changes and CoT across the lossy link.
    let mut seen = Seen::default();
    let mut seq = 0u32;
    let mut sent_changes = Vec::new();
    let t1 = Instant::now();
    for _ in 0..20 {
        let uid = format!("ITEM-{seq}");
        alpha.send(&to_mission(&uid, &format!("m{}", seq % 2), seq)).await;
        sent_changes.push(uid);
        seq += 1;
    }
    for i in 0..10 {
        alpha.send(&pli(&format!("PLI-{i}"), "A", i)).await;
    }
    let mut ping = CotEvent::new("SENSOR-1", "b-m-p-s-p-i", "m-g", CotTime::now(), 60);
    ping.point.lat = 1.0;
    alpha.send(&ping).await;
    let b_store = takgate::store::Store::open(&b_db.display().to_string()).unwrap();
    let count = |s: &takgate::store::Store| s.all_changes().map(|c| c.len()).unwrap_or(0);
    let mut all = false;
    while t1.elapsed() < Duration::from_secs(300) {
        collect(&mut beta, &mut seen, Duration::from_millis(500)).await;
        if count(&b_store) >= sent_changes.len() {
            all = true;
            break;
        }
    }
    assert!(all, "after {:?} B has {} of {} changes; A: {:?}", t1.elapsed(), count(&b_store), sent_changes.len(), a.store().queue_stats());
    collect(&mut beta, &mut seen, Duration::from_secs(2)).await;
    eprintln!("{}", report.last().unwrap());
    report.push(format!("lossy link: {} mission changes applied on B in {:.1} s; {} of 10 PLIs reached B's client (live CoT is not queued), the denied type none", sent_changes.len(), t1.elapsed().as_secs_f64(), seen.cot.iter().filter(|u| u.starts_with("PLI-")).count()));

    eprintln!("{}", report.last().unwrap());
    // Phase 2: cut and restore three times, changes made during each cut: a short cut the
    // session rides out (TCP retransmits, health checks wait 30 s), and two longer than
    // both health timeouts, which end the session and need a reconnect.
    net.shape(0.0, 0);
    let mut reconnects = Vec::new();
    for (cut, secs) in [(0, 8u64), (1, 40), (2, 40)] {
        net.shape(1.0, 0);
        let connects_before = fed_state(&a).1;
        for _ in 0..10 {
            let uid = format!("ITEM-{seq}");
            alpha.send(&to_mission(&uid, &format!("m{}", seq % 2), seq)).await;
            sent_changes.push(uid);
            seq += 1;
        }
        let cut_at = Instant::now();
        while cut_at.elapsed() < Duration::from_secs(secs) {
            collect(&mut beta, &mut seen, Duration::from_millis(500)).await;
        }
        net.shape(0.0, 0);
        let restored = Instant::now();
        let long = secs > 30;
        if long {
            let back = eventually(60.0, || {
                let (st, n) = fed_state(&a);
                st == "connected" && n > connects_before
            })
            .await;
            assert!(back, "cut {cut}: A did not reconnect within 60 s: {:?}", fed_state(&a));
            reconnects.push(restored.elapsed().as_secs_f64());
        }
        let reconnect = restored.elapsed();
        let t = Instant::now();
        while count(&b_store) < sent_changes.len() && t.elapsed() < Duration::from_secs(60) {
            collect(&mut beta, &mut seen, Duration::from_millis(300)).await;
        }
        assert_eq!(count(&b_store), sent_changes.len(), "cut {cut}: B is missing changes; A: {:?}", a.store().queue_stats());
        let how = if long { format!("session ended, reconnected {:.1} s after the restore", reconnect.as_secs_f64()) } else { format!("session kept: {}", fed_state(&a).1 == connects_before) };
        report.push(format!("cut {cut}: {secs} s at 100% loss ({how}); the 10 changes made during the cut applied {:.1} s after the restore", restored.elapsed().as_secs_f64()));
        eprintln!("{}", report.last().unwrap());
    }
    collect(&mut beta, &mut seen, Duration::from_secs(3)).await;

    // Exactly once, in order per mission: B's store, and what B's client was told.
    for m in ["m0", "m1"] {
        let want: Vec<String> = a.store().changes(m).unwrap().into_iter().map(|c| c.content_uid).collect();
        let got: Vec<String> = b_store.changes(m).unwrap().into_iter().map(|c| c.content_uid).collect();
        assert_eq!(got, want, "mission {m} on B");
        assert_eq!(want.len(), sent_changes.len() / 2);
    }
    let mut announced = seen.announced.clone();
    announced.sort();
    let mut expect = sent_changes.clone();
    expect.sort();
    assert_eq!(announced, expect, "B's client saw each change announced exactly once");
    assert!(!seen.cot.iter().any(|u| u == "SENSOR-1"), "the denied type crossed the link");
    let q = a.store().queue_stats().unwrap();
    let confirmed = eventually(30.0, || a.store().queue_stats().unwrap().first().is_some_and(|s| s.pending == 0)).await;
    assert!(confirmed, "A's queue: {q:?}");
    report.push(format!("result: {} changes sent, {} applied on B, duplicates 0, out of order 0; reconnect after restore: {:?} s", sent_changes.len(), count(&b_store), reconnects.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>()));
    let text = report.join("\n");
    eprintln!("{text}");
    let _ = std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/netem-report.txt"), text + "\n");
    a.shutdown().await;
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Latency percentiles (ms) and how many of `sent` arrived.
fn summary(lat: &mut [f64], sent: usize) -> String {
    lat.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() - 1) as f64 * q).round() as usize] };
    format!("{} of {sent} delivered, latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms", lat.len(), p(0.5), p(0.99), p(1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_and_tcp_between_two_takgates_over_a_30_percent_loss_link() {
    assert!(nix_root(), "this test builds network namespaces: run it as root");
    let mut net = Net::new();
    let dir = std::env::temp_dir().join(format!("takgate-netem-quic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = Authority::new(&dir, "netem quic CA").unwrap();
    let (bc, bk) = ca.leaf("node-b", &[&net.b_fed(), "localhost"]).unwrap();
    let (ac, ak) = ca.leaf("node-a", &["localhost"]).unwrap();
    let b_cfg = dir.join("b.toml");
    // B listens on the shaped link with TCP and QUIC; each link carries one uid prefix only.
    std::fs::write(
        &b_cfg,
        format!(
            "[node]\nid = \"node-b\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"{clean}:8088\"\nidle_timeout_secs = 3600\n\
             [[link]]\nname = \"tcp-in\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"{fed}:8087\"\npolicy = {{ uids_allow = [\"T-*\"] }}\n\
             [[link]]\nname = \"quic-in\"\ntransport = \"quic\"\nmode = \"listen\"\naddress = \"{fed}:8090\"\nca = \"{ca}\"\ncert = \"{bc}\"\nkey = \"{bk}\"\nhandshake_timeout_secs = 30\npolicy = {{ uids_allow = [\"Q-*\"] }}\n",
            clean = net.b_clean(),
            fed = net.b_fed(),
            ca = ca.ca.display(),
            bc = bc.display(),
            bk = bk.display()
        ),
    )
    .unwrap();
    net.shape(0.30, 50);
    let b_log = std::fs::File::create(dir.join("b.log")).unwrap();
    net.b = Some(Command::new("ip").args(["netns", "exec", &net.ns, env!("CARGO_BIN_EXE_takgate"), "run", "--config"]).arg(&b_cfg).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(b_log).spawn().unwrap());
    let b_client: std::net::SocketAddr = format!("{}:8088", net.b_clean()).parse().unwrap();
    assert!(common::listening(b_client, 10.0).await, "node B listens in its namespace");
    let mut beta = Client::tcp(b_client).await;
    let a = gateway(&format!(
        "[node]\nid = \"node-a\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\nidle_timeout_secs = 3600\n\
         [[link]]\nname = \"up-tcp\"\ntransport = \"tcp\"\nmode = \"connect\"\naddress = \"{fed}:8087\"\nreconnect_min_secs = 0.5\nreconnect_max_secs = 2\npolicy = {{ uids_allow = [\"T-*\"] }}\n\
         [[link]]\nname = \"up-quic\"\ntransport = \"quic\"\nmode = \"connect\"\naddress = \"{fed}:8090\"\nserver_name = \"localhost\"\nca = \"{ca}\"\ncert = \"{ac}\"\nkey = \"{ak}\"\nhandshake_timeout_secs = 30\nreconnect_min_secs = 0.5\nreconnect_max_secs = 2\npolicy = {{ uids_allow = [\"Q-*\"] }}\n",
        fed = net.b_fed(),
        ca = ca.ca.display(),
        ac = ac.display(),
        ak = ak.display()
    ))
    .await;
    let up = |name: &str| a.connection(name).is_some_and(|c| c.state == takgate::link::LinkState::Connected);
    assert!(eventually(120.0, || up("up-tcp") && up("up-quic")).await, "both links up across the lossy link: {:?} {:?}", a.connection("up-tcp"), a.connection("up-quic"));
    let connects = |name: &str| a.connection(name).map(|c| c.connects).unwrap_or(0);
    let before = (connects("up-tcp"), connects("up-quic"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut alpha = Client::tcp(a.local_addr("c").unwrap()).await;
    // 30 s of 5 position reports a second on each link, then 20 s to deliver the rest.
    let (n, every) = (150u32, Duration::from_millis(200));
    let mut sent_at = std::collections::HashMap::new();
    let mut arrived: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let start = Instant::now();
    for i in 0..n {
        for p in ["T", "Q"] {
            let uid = format!("{p}-{i}");
            alpha.send(&pli(&uid, p, i)).await;
            sent_at.insert(uid, Instant::now());
        }
        let next = start + every * (i + 1);
        while Instant::now() < next {
            if let Some(ev) = beta.recv(next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))).await {
                arrived.entry(ev.uid).or_insert_with(Instant::now);
            }
        }
    }
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(20) && arrived.len() < 2 * n as usize {
        if let Some(ev) = beta.recv(Duration::from_millis(200)).await {
            arrived.entry(ev.uid).or_insert_with(Instant::now);
        }
    }
    let lat = |p: &str| -> Vec<f64> { sent_at.iter().filter(|(u, _)| u.starts_with(p)).filter_map(|(u, t)| arrived.get(u).map(|a| a.duration_since(*t).as_secs_f64() * 1000.0)).collect() };
    let (mut tcp, mut quic) = (lat("T-"), lat("Q-"));
    let after = (connects("up-tcp"), connects("up-quic"));
    let report = format!(
        "30% loss and 50 ms delay each way, 5 events/s per link for 30 s:\n  quic: {} ({} reconnects)\n  tcp:  {} ({} reconnects)\n  shaper: {} packets dropped, {} passed",
        summary(&mut quic, n as usize),
        after.1 - before.1,
        summary(&mut tcp, n as usize),
        after.0 - before.0,
        net.shaper.dropped.load(Relaxed),
        net.shaper.passed.load(Relaxed)
    );
    eprintln!("{report}");
    let _ = std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/netem-quic-report.txt"), report.clone() + "\n");
    assert_eq!(quic.len(), n as usize, "every event crosses the lossy link over QUIC: {report}");
    assert_eq!(after.1, before.1, "the QUIC session rides out the loss: {report}");
    a.shutdown().await;
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}

fn nix_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}
