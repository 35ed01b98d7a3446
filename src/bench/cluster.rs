//! `bench cluster`: takgate nodes sharing a RabbitMQ broker (`amqp_mode = "cluster"`),
//! started in this process (or given as running nodes' client ports), with TAK clients
//! spread across them: events per second through the broker, end-to-end latency, delivered
//! against expected, and what is left in the nodes' queues at the end.

use std::time::{Duration, Instant};

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use serde::Serialize;

use super::{ClientsArgs, ClientsSummary, Target};
use crate::runtime::Gateway;

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Nodes started in this process.
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// The broker.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub url: String,
    /// Running nodes instead: their TCP client ports (HOST:PORT,HOST:PORT,...); give
    /// --exchange and --node-ids to read their queues at the end.
    #[arg(long)]
    pub targets: Option<String>,
    /// The cluster exchange (default: one of the bench's own, removed at the end).
    #[arg(long)]
    pub exchange: Option<String>,
    /// With --targets: the nodes' ids, for their queue depths.
    #[arg(long)]
    pub node_ids: Option<String>,
    /// Throughput: this many senders at full speed (or --rate events/s in total) into the
    /// first node, one receiver on the second. Without it: --clients TAK clients spread
    /// across the nodes at --rate Hz each, every one reading everything.
    #[arg(long)]
    pub senders: Option<u32>,
    /// Clients in total (spread across the nodes).
    #[arg(long, default_value_t = 300)]
    pub clients: u32,
    /// Hz per client; with --senders, events/s in total (default: as fast as they can).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct ClusterSummary {
    pub scenario: &'static str,
    pub nodes: usize,
    /// Throughput mode: events offered into the first node and delivered out of the second.
    pub sent: Option<u64>,
    pub delivered_events: Option<u64>,
    pub events_per_s: Option<f64>,
    /// Throughput mode: p50, p99 and max from sender to receiver, in ms.
    pub latency_ms: Option<[f64; 3]>,
    /// Clients mode: delivery and latency, as `bench clients` reports them.
    #[serde(flatten)]
    pub clients: Option<ClientsSummary>,
    /// Messages left in each node's queue once the run is over and the nodes had up to 30 s
    /// to drain them.
    pub queue_depth_at_end: Vec<(String, u32)>,
}

pub async fn cluster(a: ClusterArgs) -> Result<ClusterSummary, String> {
    let exchange = a.exchange.clone().unwrap_or_else(|| format!("takgate-bench-{}", std::process::id()));
    let mut gateways: Vec<Gateway> = vec![];
    let (targets, ids) = match &a.targets {
        Some(t) => (t.split(',').map(str::to_owned).collect::<Vec<_>>(), a.node_ids.as_deref().unwrap_or("").split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()),
        None => {
            let ids: Vec<String> = (1..=a.nodes).map(|i| format!("bench-c{i}")).collect();
            for id in &ids {
                let cfg = format!(
                    "[node]\nid = \"{id}\"\n[log]\nlevel = \"warn\"\n[router]\nqueue_depth = 65536\n[[link]]\nname = \"c\"\ntransport = \"tcp\"\nmode = \"listen\"\naddress = \"127.0.0.1:0\"\n\
                     [[link]]\nname = \"bus\"\ntransport = \"amqp\"\naddress = \"{}\"\namqp_mode = \"cluster\"\nexchange = \"{exchange}\"\n",
                    a.url
                );
                gateways.push(crate::runtime::start(&crate::config::Config::parse(&cfg).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?);
            }
            members_up(&gateways, a.nodes).await?;
            (gateways.iter().filter_map(|g| g.local_addr("c")).map(|a| a.to_string()).collect(), ids)
        }
    };
    if targets.len() < 2 {
        return Err("a cluster bench needs at least two nodes".into());
    }
    let target = |t: String| Target { target: t, ca: None, cert: None, key: None, server_name: None, proto: false, quic: false, allow_remote: false, json: a.json };
    let mut out = ClusterSummary { scenario: "cluster", nodes: targets.len(), sent: None, delivered_events: None, events_per_s: None, latency_ms: None, clients: None, queue_depth_at_end: vec![] };
    match a.senders {
        Some(s) => {
            eprintln!("cluster: {s} senders into {}, 1 receiver on {}, {} s", targets[0], targets[1], a.duration);
            let (tx, rx) = (target(targets[0].clone()).dial().await?, target(targets[1].clone()).dial().await?);
            let (sent, delivered, hist) = super::fanout_timed(&tx, &rx, s, 1, a.duration, a.rate).await;
            let ms = |q: f64| hist.quantile(q) as f64 / 1000.0;
            out.latency_ms = Some([ms(0.5), ms(0.99), hist.max() as f64 / 1000.0]);
            out.sent = Some(sent);
            out.delivered_events = Some(delivered);
            out.events_per_s = Some(delivered as f64 / a.duration);
        }
        None => {
            eprintln!("cluster: {} clients across {} nodes at {} Hz", a.clients, targets.len(), a.rate.unwrap_or(1.0));
            out.clients = Some(super::clients(ClientsArgs { target: target(targets.join(",")), clients: a.clients, rate: a.rate.unwrap_or(1.0), duration: a.duration, ramp: 3.0, pad: 0 }).await?);
        }
    }
    // The nodes drain their queues (what came in after the receivers left is routed to no
    // one): wait for that, up to 30 s, and report what is left.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        out.queue_depth_at_end = queue_depths(&a.url, &exchange, &ids).await?;
        if out.queue_depth_at_end.iter().all(|(_, n)| *n == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for g in gateways {
        g.shutdown().await;
    }
    if a.targets.is_none() {
        remove(&a.url, &exchange, &ids).await;
    }
    Ok(out)
}

/// Waits until every node lists every other as up.
async fn members_up(nodes: &[Gateway], n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = nodes.iter().all(|g| g.control().clusters.all().first().is_some_and(|d| d.view().iter().filter(|m| matches!(m.state, "self" | "up")).count() >= n));
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the {n} nodes did not all see each other on the broker within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn channel(url: &str) -> Result<(lapin::Connection, lapin::Channel), String> {
    let c = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.map_err(|e| format!("{url}: {e}"))?;
    let ch = c.create_channel().await.map_err(|e| e.to_string())?;
    Ok((c, ch))
}

/// Messages in each node's queue (a passive declare; a queue that is gone reads as absent).
async fn queue_depths(url: &str, exchange: &str, ids: &[String]) -> Result<Vec<(String, u32)>, String> {
    let mut out = vec![];
    for id in ids {
        let (c, ch) = channel(url).await?;
        let q = format!("{exchange}.q.{id}");
        if let Ok(d) = ch.queue_declare(q.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await {
            out.push((q, d.message_count()));
        }
        let _ = c.close(200, "bench".into()).await;
    }
    Ok(out)
}

/// The bench's own queues and exchanges, removed.
async fn remove(url: &str, exchange: &str, ids: &[String]) {
    let Ok((c, ch)) = channel(url).await else { return };
    for id in ids {
        let _ = ch.queue_delete(format!("{exchange}.q.{id}").as_str().into(), QueueDeleteOptions::default()).await;
        let _ = ch.exchange_delete(format!("{exchange}.node.{id}").as_str().into(), ExchangeDeleteOptions::default()).await;
    }
    let _ = ch.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
    let _ = c.close(200, "bench".into()).await;
}
