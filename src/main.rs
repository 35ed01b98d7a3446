//! The `takgate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use takgate::config::{Config, DEFAULT_TOML};
use takgate::cotcmd;

// Allocation is a large share of decoding; mimalloc makes it 15-25 % cheaper than glibc's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "takgate", version, about = "A gateway for TAK Cursor-on-Target traffic")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (embedded default configuration unless --config is given).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print or check configuration.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// Load-test a TAK server or gateway.
    Bench {
        #[command(subcommand)]
        scenario: BenchCmd,
    },
    /// Create a CA and the server, client and federation certificates it signs.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Missions in the store.
    Missions {
        #[command(subcommand)]
        cmd: MissionsCmd,
    },
    /// Federation tools.
    Federation {
        #[command(subcommand)]
        cmd: FederationCmd,
    },
    /// Federation Hub tools.
    Hub {
        #[command(subcommand)]
        cmd: HubCmd,
    },
    /// QUIC tools.
    Quic {
        #[command(subcommand)]
        cmd: QuicCmd,
    },
    /// Tools for CoT captures.
    Cot {
        #[command(subcommand)]
        cmd: CotCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// N streaming clients sending position reports at R Hz, each reading everything.
    Clients(takgate::bench::ClientsArgs),
    /// S senders at full speed to R receivers.
    Fanout(takgate::bench::FanoutArgs),
    /// Events per second across one federation link (v1 or v2) between two nodes.
    Federation(takgate::bench::FederationArgs),
    /// takgate nodes sharing a RabbitMQ broker: events/s through it (--senders) or TAK
    /// clients spread across the nodes, latency, and the queues left at the end.
    Cluster(takgate::bench::cluster::ClusterArgs),
    /// N nodes federated through a takgate hub, or pair-wise with one of them, TAK clients on
    /// each at R Hz: delivery to every other client and latency (with --hub-process, the
    /// hub's memory per federate).
    Spokes(takgate::bench::spokes::SpokesArgs),
    /// Datagram senders into the gateway (UDP port or multicast group), stream receivers out.
    Udp(takgate::bench::UdpArgs),
    /// N idle connections; with --pid, the gateway's resident memory per connection.
    Idle(takgate::bench::IdleArgs),
    /// A plain relay (split after </event>, no parsing) to compare against.
    Relay {
        #[arg(long, default_value = "127.0.0.1:18999")]
        listen: String,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// A new CA: DIR/ca.pem and DIR/ca.key (0600).
    Ca {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "takgate CA")]
        cn: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// A server certificate (serverAuth) for the names clients dial.
    Server(IssueArgs),
    /// A client certificate (clientAuth), also as DIR/CN.p12 for ATAK and WinTAK.
    Client(IssueArgs),
    /// A federation certificate (serverAuth and clientAuth) for the names federates dial.
    Federation(IssueArgs),
    /// An ATAK/WinTAK/iTAK connection data package: a new client certificate for CN (unless
    /// DIR has one), its .p12, the CA as truststore .p12, and the connection preferences, in
    /// one zip the device imports (the CA's key is never in it).
    Package {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cn: String,
        /// The host the device dials.
        #[arg(long)]
        server: String,
        /// takgate's TLS client port.
        #[arg(long, default_value_t = 8089)]
        port: u16,
        /// Also a QUIC connection on this port (ATAK 5.5).
        #[arg(long)]
        quic: Option<u16>,
        #[arg(long, default_value = "atakatak")]
        p12_password: String,
        #[arg(long, default_value_t = 730)]
        days: u32,
        /// Where to write the zip (default DIR/CN-SERVER.zip).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revokes a certificate this CA issued: DIR/crl.pem is signed anew with every revoked
    /// certificate; point a link's `crl` at it (restart or re-add the link to reload).
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to revoke (PEM).
        cert: PathBuf,
        /// The CRL's validity in days.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

#[derive(clap::Args)]
struct IssueArgs {
    /// The CA's directory (from `takgate certs ca`); the certificate is written there.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    cn: String,
    /// DNS names and IP addresses (comma separated); required for server and federation.
    #[arg(long, value_delimiter = ',')]
    san: Vec<String>,
    #[arg(long, default_value_t = 730)]
    days: u32,
    /// PKCS#12 password (client certificates).
    #[arg(long, default_value = "atakatak")]
    p12_password: String,
    /// PKCS#12 with AES-256/SHA-256 instead of the 3DES/SHA-1 every ATAK version imports.
    #[arg(long)]
    p12_modern: bool,
}

#[derive(Subcommand)]
enum MissionsCmd {
    /// Every mission: items, changes, creator.
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// A mission's changes, oldest first.
    Changes {
        name: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FederationCmd {
    /// The outbound mission-change queue: totals per federate, then pending items (oldest
    /// first) with attempts and the last error.
    Queue {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Pending items to list (0: totals only).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Staged connection test of a federation peer: resolve, TCP, TLS, identity, then the
    /// protocol (v1: first frame; v2: SERVING on the groups stream and a health check).
    Test {
        /// A federation link's name in the config file, or HOST:PORT of the peer.
        target: String,
        /// The configuration that holds the link (default: the embedded one).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// v1 or v2 (default: the link's transport; for HOST:PORT, v2 on port 9001, else v1).
        #[arg(long)]
        protocol: Option<String>,
        #[command(flatten)]
        certs: ProbeCerts,
        /// Seconds to wait for the peer's first frame.
        #[arg(long, default_value_t = 3)]
        listen: u64,
        #[arg(long)]
        json: bool,
    },
}

/// The certificates of a staged connection test (options win over the link's).
#[derive(clap::Args)]
struct ProbeCerts {
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    #[arg(long)]
    server_name: Option<String>,
}

#[derive(Subcommand)]
enum HubCmd {
    /// Validate a hub policy file (TAK's hub UI export) offline and print its graph.
    Check { policy: PathBuf },
    /// The CA group id of each CA certificate in a PEM file, as the hub (and TAK's hub)
    /// names it in a policy's GroupCell.
    CaGroup { ca: PathBuf },
}

#[derive(Subcommand)]
enum QuicCmd {
    /// Staged connection test of a TAK QUIC input (TAK Server `protocol="quic"`, or a
    /// takgate): certificates, resolve, QUIC handshake, ALPN takstream, the server's
    /// identity, the stream, TAK protocol negotiation, a ping.
    Test {
        /// A quic link's name in the config file, or HOST:PORT of the input.
        target: String,
        /// The configuration that holds the link (default: the embedded one).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(flatten)]
        certs: ProbeCerts,
        /// Seconds the handshake and each answer may take.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the embedded default configuration.
    Default,
    /// Validate a configuration file.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum CotCmd {
    /// Convert events from stdin to stdout between XML, TAK protobuf and JSON.
    Convert {
        #[arg(long, value_enum, default_value = "auto")]
        from: cotcmd::From,
        #[arg(long, value_enum)]
        to: cotcmd::To,
        /// Write binary output as one hex line per event.
        #[arg(long)]
        hex: bool,
    },
    /// One readable line per event from stdin.
    Inspect {
        #[arg(long, value_enum, default_value = "auto")]
        from: cotcmd::From,
    },
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => {
            let cfg = match config {
                Some(p) => Config::load(&p),
                None => Ok(Config::default_config()),
            };
            let cfg = match cfg {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("takgate: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg.log.level, cfg.log.json);
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("takgate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(&cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("takgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Bench { scenario } => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("takgate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let res: Result<(), String> = rt.block_on(async {
                use takgate::bench;
                match scenario {
                    BenchCmd::Clients(a) => {
                        let json = a.target.json;
                        bench::print(&bench::clients(a).await?, json);
                    }
                    BenchCmd::Fanout(a) => {
                        let json = a.target.json;
                        bench::print(&bench::fanout(a).await?, json);
                    }
                    BenchCmd::Federation(a) => {
                        let json = a.json;
                        bench::print(&bench::federation(a).await?, json);
                    }
                    BenchCmd::Cluster(a) => {
                        let json = a.json;
                        bench::print(&bench::cluster::cluster(a).await?, json);
                    }
                    BenchCmd::Spokes(a) => {
                        let json = a.json;
                        bench::print(&bench::spokes::spokes(a).await?, json);
                    }
                    BenchCmd::Udp(a) => {
                        let json = a.target.json;
                        bench::print(&bench::udp(a).await?, json);
                    }
                    BenchCmd::Idle(a) => {
                        let json = a.target.json;
                        bench::print(&bench::idle(a).await?, json);
                    }
                    BenchCmd::Relay { listen } => {
                        let l = tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("{listen}: {e}"))?;
                        eprintln!("plain relay on {listen}");
                        bench::conn::relay(l).await;
                    }
                }
                Ok(())
            });
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("takgate bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Federation { cmd: FederationCmd::Test { target, config, protocol, certs: ProbeCerts { ca, cert, key, server_name }, listen, json } } => {
            staged("federation test", probe_target(&target, config, protocol, ca, cert, key, server_name, listen).map(|t| async move { takgate::federation::probe::probe(&t).await }), json)
        }
        Cmd::Quic { cmd: QuicCmd::Test { target, config, certs: ProbeCerts { ca, cert, key, server_name }, timeout, json } } => {
            staged("quic test", quic_target(&target, config, ca, cert, key, server_name, timeout).map(|t| async move { takgate::transport::quic::probe::probe(&t).await }), json)
        }
        Cmd::Hub { cmd } => match hub_cmd(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("takgate hub: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Certs { cmd } => match certs(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("takgate certs: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Missions { cmd } => match store_report(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("takgate missions: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Federation { cmd: FederationCmd::Queue { config, limit, json } } => match queue_report(config, limit, json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("takgate federation queue: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Config { cmd: ConfigCmd::Default } => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Cmd::Config { cmd: ConfigCmd::Check { file } } => match Config::load(&file) {
            Ok(c) => {
                for w in c.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok ({} links)", file.display(), c.links.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Cmd::Cot { cmd } => {
            let input = match cotcmd::read_stdin() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("takgate: reading stdin: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
            let r = match cmd {
                CotCmd::Convert { from, to, hex } => cotcmd::convert(&input, from, to, hex, &mut out, &mut err),
                CotCmd::Inspect { from } => cotcmd::inspect(&input, from, &mut out, &mut err),
            };
            match r {
                Ok(s) if s.errors == 0 => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("takgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn hub_cmd(cmd: HubCmd) -> Result<(), String> {
    use takgate::hub::policy::{End, Policy};
    match cmd {
        HubCmd::Check { policy } => {
            let text = std::fs::read_to_string(&policy).map_err(|e| format!("{}: {e}", policy.display()))?;
            let p = Policy::parse(&text).map_err(|e| format!("{}: {e}", policy.display()))?;
            println!("{}: policy {:?}: {} groups, {} federates, {} outgoing, {} edges", policy.display(), p.name, p.groups.len(), p.federates.len(), p.outgoings.len(), p.edges.len());
            let end = |e: &End| match e {
                End::Group(n) => format!("group {n}"),
                End::Federate(n) => format!("federate {n}"),
                End::Outgoing(n) => format!("outgoing {n}"),
            };
            for g in &p.groups {
                println!("  group    {}{}", g.name, if g.interconnected { " (interconnected)" } else { "" });
            }
            for f in &p.federates {
                println!("  federate {} in {:?}", f.name, f.groups);
            }
            for o in &p.outgoings {
                println!("  outgoing {} -> {}:{}{}", o.name, o.host, o.port, if o.enabled { "" } else { " (disabled)" });
            }
            for e in &p.edges {
                println!("  edge     {:?}: {} -> {}: {}", e.name, end(&e.source), end(&e.destination), serde_json::to_string(&e.filter).unwrap_or_default());
            }
            Ok(())
        }
        HubCmd::CaGroup { ca } => {
            for c in takgate::link::tls::load_certs(&ca).map_err(|e| e.to_string())? {
                println!("{}", takgate::hub::identity::ca_group_id(&c)?);
            }
            Ok(())
        }
    }
}

/// Runs a staged test (or says why it cannot) and prints its stages.
fn staged<F: std::future::Future<Output = Vec<takgate::link::probe::Stage>>>(what: &str, probe: Result<F, String>, json: bool) -> ExitCode {
    let probe = match probe {
        Ok(p) => p,
        Err(e) => {
            eprintln!("takgate {what}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => print_stages(&rt.block_on(probe), json),
        Err(e) => {
            eprintln!("takgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A staged test's stages, as a table or JSON; success when every stage passed.
fn print_stages(stages: &[takgate::link::probe::Stage], json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string(stages).unwrap_or_default());
    } else {
        for s in stages {
            println!("{:<16} {:<4} {:>6} ms  {}", s.name, if s.ok { "ok" } else { "FAIL" }, s.ms, s.detail);
        }
    }
    if stages.iter().all(|s| s.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `quic test` probes: a configured quic link by name (its address, certificates and
/// server name), or HOST:PORT with certificate paths; options given here win.
fn quic_target(target: &str, config: Option<PathBuf>, ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>, server_name: Option<String>, timeout: u64) -> Result<takgate::transport::quic::probe::QuicTarget, String> {
    let cfg = match &config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default_config(),
    };
    let (address, files, name) = match cfg.links.iter().find(|l| l.name == target).map(|l| (l, &l.kind)) {
        Some((l, takgate::config::LinkKind::Quic(s, _))) => {
            let name = match &s.role {
                takgate::config::Role::Connect { tls, .. } => tls.server_name.clone(),
                takgate::config::Role::Listen { .. } => None,
            };
            (l.address(), s.tls.clone().unwrap_or_default(), name)
        }
        Some(_) => return Err(format!("link {target:?} is not a quic link")),
        None if target.contains(':') => (target.to_string(), Default::default(), None),
        None => return Err(format!("{target:?} is neither a quic link in {} nor HOST:PORT", config.map(|p| p.display().to_string()).unwrap_or("the embedded configuration".into()))),
    };
    let need = |v: Option<PathBuf>, what: &str| v.ok_or(format!("--{what} is required (TAK's QUIC needs the CA and a client certificate)"));
    Ok(takgate::transport::quic::probe::QuicTarget {
        address,
        ca: need(ca.or(files.ca), "ca")?,
        cert: need(cert.or(files.cert), "cert")?,
        key: need(key.or(files.key), "key")?,
        server_name: server_name.or(name),
        timeout: std::time::Duration::from_secs(timeout.max(1)),
    })
}

/// What `federation test` probes: a configured federation link by name, or an address with
/// certificate paths; options given on the command line win over the link's.
#[allow(clippy::too_many_arguments)]
fn probe_target(target: &str, config: Option<PathBuf>, protocol: Option<String>, ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>, server_name: Option<String>, listen: u64) -> Result<takgate::federation::probe::ProbeTarget, String> {
    use takgate::config::Transport;
    let cfg = match &config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default_config(),
    };
    let link = cfg.links.iter().find(|l| l.name == target && l.transport().is_federation());
    let (address, l_ca, l_cert, l_key, l_name, l_proto) = match link.map(|l| (l, &l.kind)) {
        Some((l, takgate::config::LinkKind::FederationV1(f) | takgate::config::LinkKind::FederationV2(f))) => {
            let name = match &f.role {
                takgate::config::Role::Connect { tls, .. } => tls.server_name.clone(),
                takgate::config::Role::Listen { .. } => None,
            };
            (l.address(), f.tls.ca.clone(), f.tls.cert.clone(), f.tls.key.clone(), name, Some(if l.transport() == Transport::FederationV2 { 2 } else { 1 }))
        }
        Some(_) => unreachable_link(target)?,
        None if target.contains(':') => (target.to_string(), None, None, None, None, None),
        None => return Err(format!("{target:?} is neither a federation link in {} nor HOST:PORT", config.map(|p| p.display().to_string()).unwrap_or("the embedded configuration".into()))),
    };
    let protocol = match protocol.as_deref() {
        Some("v1" | "1") => 1,
        Some("v2" | "2") => 2,
        Some(p) => return Err(format!("--protocol {p:?}: use v1 or v2")),
        None => l_proto.unwrap_or(if address.ends_with(":9001") { 2 } else { 1 }),
    };
    let need = |v: Option<PathBuf>, what: &str| v.ok_or(format!("--{what} is required (the link has none)"));
    Ok(takgate::federation::probe::ProbeTarget {
        address,
        ca: need(ca.or(l_ca), "ca")?,
        cert: need(cert.or(l_cert), "cert")?,
        key: need(key.or(l_key), "key")?,
        server_name: server_name.or(l_name),
        listen: std::time::Duration::from_secs(listen),
        protocol,
    })
}

/// The store named by the configuration's `[store] path`.
fn open_store(config: Option<PathBuf>) -> Result<takgate::store::Store, String> {
    let cfg = match &config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default_config(),
    };
    let path = cfg.store.path.ok_or_else(|| format!("{} has no [store] path: the gateway keeps missions in memory, so there is nothing to read", config.map(|p| p.display().to_string()).unwrap_or("the embedded configuration".into())))?;
    if !std::path::Path::new(&path).exists() {
        return Err(format!("{path}: no store yet (the gateway creates it when it starts)"));
    }
    takgate::store::Store::open(&path).map_err(|e| e.to_string())
}

fn unreachable_link<T>(target: &str) -> Result<T, String> {
    Err(format!("{target:?} is not a federation link"))
}

/// Runs the gateway and its admin API until Ctrl-C or SIGTERM, then stops it cleanly.
async fn run(cfg: &Config) -> Result<(), takgate::link::StartError> {
    let nofile = takgate::link::listen::raise_nofile_limit();
    tracing::debug!(nofile, "file-descriptor limit");
    let gw = takgate::runtime::start(cfg).await?;
    if let Some(a) = &cfg.admin {
        if let Err(e) = takgate::admin::spawn(&gw, a).await {
            gw.shutdown().await;
            return Err(e);
        }
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    gw.shutdown().await;
    Ok(())
}

fn ms_text(ms: i64) -> String {
    let mut v = Vec::new();
    takgate::cot::CotTime(ms).write_to(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

fn store_report(cmd: MissionsCmd) -> Result<(), String> {
    match cmd {
        MissionsCmd::List { config, json } => {
            let m = open_store(config)?.missions().map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&m).unwrap_or_default());
            } else {
                println!("{:<24} {:>6} {:>8}  {:<10} {:<24} {}", "MISSION", "ITEMS", "CHANGES", "TOOL", "CREATED", "STATE");
                for x in &m {
                    println!("{:<24} {:>6} {:>8}  {:<10} {:<24} {}", x.name, x.items, x.changes, x.tool, x.created_at, if x.deleted_at.is_some() { "deleted" } else { "active" });
                }
            }
        }
        MissionsCmd::Changes { name, config, json } => {
            let c = open_store(config)?.changes(&name).map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string(&c).unwrap_or_default());
            } else {
                println!("{:>6}  {:<24} {:<15} {:<36} {:<10} {}", "ID", "WHEN", "TYPE", "CONTENT", "FEDERATED", "CREATOR");
                for x in &c {
                    let content = if x.content_uid.is_empty() { &x.content_hash } else { &x.content_uid };
                    let fed = if x.is_federated { x.origin_federate.clone().unwrap_or("yes".into()) } else { "no".into() };
                    println!("{:>6}  {:<24} {:<15} {:<36} {:<10} {}", x.id, ms_text(x.ts_ms), x.change_type, content, fed, x.creator_uid);
                }
            }
        }
    }
    Ok(())
}

fn queue_report(config: Option<PathBuf>, limit: usize, json: bool) -> Result<(), String> {
    let store = open_store(config)?;
    let stats = store.queue_stats().map_err(|e| e.to_string())?;
    let pending = if limit > 0 { store.all_pending(limit).map_err(|e| e.to_string())? } else { vec![] };
    if json {
        println!("{}", serde_json::json!({"servers": stats, "pending": pending}));
        return Ok(());
    }
    println!("{:<28} {:>7} {:>7} {:>8} {:>7}  {:<24} {}", "FEDERATE", "TOTAL", "SENT", "PENDING", "FAILED", "OLDEST PENDING", "LAST ERROR");
    for s in &stats {
        println!("{:<28} {:>7} {:>7} {:>8} {:>7}  {:<24} {}", s.server, s.total, s.sent, s.pending, s.failed, s.oldest_pending.as_deref().unwrap_or("-"), s.last_error.as_deref().unwrap_or("-"));
    }
    if !pending.is_empty() {
        println!();
        println!("{:<28} {:>6} {:<24} {:<15} {:<24} {:>8}  {}", "FEDERATE", "QUEUE", "QUEUED", "TYPE", "MISSION", "ATTEMPTS", "CONTENT / LAST ERROR");
        for p in &pending {
            println!("{:<28} {:>6} {:<24} {:<15} {:<24} {:>8}  {}{}", p.server, p.queue_id, p.created_at, p.change.change_type, p.change.mission, p.attempts, p.change.content_uid, p.last_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default());
        }
    }
    Ok(())
}

fn certs(cmd: CertsCmd) -> Result<(), String> {
    use takgate::certs::{export_p12, Authority, Kind};
    let (kind, a) = match cmd {
        CertsCmd::Ca { dir, cn, days } => {
            if dir.join("ca.key").exists() {
                return Err(format!("{} already holds a CA (ca.key): refusing to replace it", dir.display()));
            }
            let ca = Authority::create(&dir, &cn, days)?;
            println!("CA {cn:?}: {} and {} (keep the key private)", ca.ca.display(), dir.join("ca.key").display());
            return Ok(());
        }
        CertsCmd::Package { dir, cn, server, port, quic, p12_password, days, out } => {
            let ca = Authority::load(&dir)?;
            let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
            let (cert, key) = if cert.exists() && key.exists() { (cert, key) } else { ca.issue(Kind::Client, &cn, &[], days)? };
            let c = takgate::package::Connection { cn: cn.clone(), server: server.clone(), port, quic_port: quic, password: p12_password };
            let zip = takgate::package::build(&c, &cert, &key, &ca.ca)?;
            let out = out.unwrap_or_else(|| dir.join(format!("{cn}-{server}.zip")));
            std::fs::write(&out, zip).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("connection package for {cn:?} ({server}:{port}{}): {}", quic.map(|q| format!(", QUIC {q}")).unwrap_or_default(), out.display());
            return Ok(());
        }
        CertsCmd::Revoke { dir, cert, days } => {
            let crl = Authority::load(&dir)?.revoke(&cert, days)?;
            println!("revoked {}; certificate revocation list: {}", cert.display(), crl.display());
            return Ok(());
        }
        CertsCmd::Server(a) => (Kind::Server, a),
        CertsCmd::Client(a) => (Kind::Client, a),
        CertsCmd::Federation(a) => (Kind::Federation, a),
    };
    let ca = Authority::load(&a.dir)?;
    let sans: Vec<&str> = a.san.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    let (cert, key) = ca.issue(kind, &a.cn, &sans, a.days)?;
    println!("{:?} certificate {:?}: {} and {}", kind, a.cn, cert.display(), key.display());
    if kind == Kind::Client {
        let p12 = a.dir.join(format!("{}.p12", a.cn));
        export_p12(&cert, &key, &p12, &a.p12_password, !a.p12_modern)?;
        println!("PKCS#12 for ATAK/WinTAK: {} (import with the CA as truststore)", p12.display());
    }
    Ok(())
}
