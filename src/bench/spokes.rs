//! `bench spokes`: N takgate nodes federated over v2, either all as spokes of a takgate
//! Federation Hub, or pair-wise with one of them (the "5+ federates at once" case), with TAK
//! clients on every node sending position reports at R Hz and reading everything: how much
//! of what every client sent reached every other client, and how fast. With
//! `--hub-process`, the hub runs as its own process and its resident memory is read before
//! and after the spokes connect (the hub's memory per federate).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{ClientsArgs, ClientsSummary, Target};
use crate::runtime::Gateway;

#[derive(Debug, Clone, clap::Args)]
pub struct SpokesArgs {
    /// Nodes: spokes of the hub, or (without --hub) node 1 and the nodes it federates with.
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// Every node a spoke of a takgate hub (one interconnected group); without it, node 1
    /// listens and every other node federates with it (relay_federates on node 1, so every
    /// client sees every other client).
    #[arg(long)]
    pub hub: bool,
    /// Run the hub as its own takgate process (with --hub) and report its memory.
    #[arg(long)]
    pub hub_process: bool,
    /// TAK clients per node.
    #[arg(long, default_value_t = 5)]
    pub clients: u32,
    /// Position reports per second per client.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct SpokesSummary {
    pub layout: &'static str,
    pub nodes: usize,
    /// The hub process's resident memory before any spoke connected and with all of them.
    pub hub_rss_before_kib: Option<u64>,
    pub hub_rss_with_spokes_kib: Option<u64>,
    pub hub_rss_per_federate_kib: Option<f64>,
    #[serde(flatten)]
    pub clients: ClientsSummary,
}

/// A hub in its own process; killed when dropped.
struct HubProcess(std::process::Child);

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn spokes(a: SpokesArgs) -> Result<SpokesSummary, String> {
    if a.nodes < 2 {
        return Err("--nodes: at least 2".into());
    }
    if a.hub_process && !a.hub {
        return Err("--hub-process needs --hub".into());
    }
    let dir = std::env::temp_dir().join(format!("takgate-bench-spokes-{}", std::process::id()));
    let ca = crate::certs::Authority::new(&dir, "takgate bench CA")?;
    let mut gateways: Vec<Gateway> = vec![];
    let mut process = None;
    let center = if a.hub {
        if a.hub_process {
            let port = free_port()?;
            let cfg = dir.join("hub.toml");
            std::fs::write(&cfg, super::bench_hub_config(&ca, &dir, &format!("127.0.0.1:{port}"))?).map_err(|e| e.to_string())?;
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let child = std::process::Command::new(exe).args(["run", "--config"]).arg(&cfg).stdout(std::process::Stdio::null()).spawn().map_err(|e| format!("the hub process: {e}"))?;
            process = Some(HubProcess(child));
            wait_listening(port).await?;
            format!("127.0.0.1:{port}")
        } else {
            let h = super::bench_hub(&ca, &dir).await?;
            let at = h.control().hub.as_ref().map(|h| h.address.to_string()).ok_or("no hub")?;
            gateways.push(h);
            at
        }
    } else {
        let (c, k) = ca.leaf("node-1", &["localhost", "127.0.0.1"])?;
        let g = start(&node_config("node-1", "listen", "127.0.0.1:0", &ca.ca, &c, &k, "[link.policy]\nrelay_federates = true\n")).await?;
        let at = g.local_addr("fed").ok_or("node 1 has no federation address")?.to_string();
        gateways.push(g);
        at
    };
    let rss_before = process.as_ref().and_then(|p| super::rss_kib(p.0.id()));
    let first_spoke = gateways.len();
    let connecting = if a.hub { 1..=a.nodes } else { 2..=a.nodes };
    for i in connecting {
        let id = format!("node-{i}");
        let (c, k) = ca.leaf(&id, &["localhost", "127.0.0.1"])?;
        gateways.push(start(&node_config(&id, "connect", &center, &ca.ca, &c, &k, "server_name = \"localhost\"\n")).await?);
    }
    let nodes: Vec<&Gateway> = if a.hub { gateways[first_spoke..].iter().collect() } else { gateways.iter().collect() };
    federated(&nodes, if a.hub { 1 } else { a.nodes - 1 }).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_with = process.as_ref().and_then(|p| super::rss_kib(p.0.id()));
    let targets: Vec<String> = nodes.iter().filter_map(|g| g.local_addr("c")).map(|a| a.to_string()).collect();
    let target = Target { target: targets.join(","), ca: None, cert: None, key: None, server_name: None, proto: false, quic: false, allow_remote: false, json: a.json };
    eprintln!("spokes: {} nodes ({}), {} clients each at {} Hz", a.nodes, if a.hub { "through a hub" } else { "pair-wise with node 1" }, a.clients, a.rate);
    let clients = super::clients(ClientsArgs { target, clients: a.clients * a.nodes as u32, rate: a.rate, duration: a.duration, ramp: 3.0, pad: 0 }).await?;
    for g in gateways {
        g.shutdown().await;
    }
    drop(process);
    let _ = std::fs::remove_dir_all(&dir);
    let spokes = if a.hub { a.nodes } else { a.nodes - 1 };
    Ok(SpokesSummary {
        layout: if a.hub { "hub" } else { "pair-wise" },
        nodes: a.nodes,
        hub_rss_before_kib: rss_before,
        hub_rss_with_spokes_kib: rss_with,
        hub_rss_per_federate_kib: rss_before.zip(rss_with).map(|(b, w)| (w as f64 - b as f64) / spokes as f64),
        clients,
    })
}

async fn start(cfg: &str) -> Result<Gateway, String> {
    crate::runtime::start(&crate::config::Config::parse(cfg).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())
}

/// A node with a TCP client port `c` and a federation v2 link `fed`.
fn node_config(id: &str, mode: &str, addr: &str, ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path, extra: &str) -> String {
    format!(
        "[node]\nid = \"{id}\"\n[log]\nlevel = \"warn\"\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
         [[link]]\nname = \"fed\"\ntransport = \"federation-v2\"\nmode = \"{mode}\"\naddress = \"{addr}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// Waits until every node has `links` federation peers.
async fn federated(nodes: &[&Gateway], first_links: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, g) in nodes.iter().enumerate() {
        let want = if i == 0 { first_links } else { 1 };
        loop {
            let n = g.router().stats().await.iter().filter(|s| s.transport.starts_with("federation")).count();
            if n >= want {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("node {} has {n} of {want} federation sessions after 30 s", i + 1));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

async fn wait_listening(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("the hub process does not listen on {port} after 15 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
