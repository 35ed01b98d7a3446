//! The live OpenTAKServer 1.7.14 instances `scripts/ots up` starts (scripts/test does):
//! `a` on 127.0.0.2, `b` on 127.0.0.3, each with its RabbitMQ, API (8081), TCP CoT port
//! (8088), PostgreSQL database `ots_<name>` and a takgate service certificate.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Client;

pub struct Ots {
    pub name: &'static str,
    pub ip: &'static str,
    pub home: PathBuf,
}

impl Ots {
    /// The instance, which must be running.
    pub fn get(name: &'static str) -> Ots {
        let ip = match name {
            "a" => "127.0.0.2",
            "b" => "127.0.0.3",
            _ => panic!("no OpenTAKServer instance {name}"),
        };
        let home = std::env::var_os("TAKGATE_OTS_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/takgate-ots")).join("run").join(name);
        let o = Ots { name, ip, home };
        for port in [5672, 8081, 8088] {
            let a: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            assert!(
                std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok(),
                "OpenTAKServer instance {name} is not running ({a} does not answer): start it with `scripts/ots up` (the test command, scripts/test, does); logs in {}",
                o.home.display()
            );
        }
        o
    }

    pub fn amqp(&self) -> String {
        format!("amqp://guest:guest@{}:5672", self.ip)
    }
    pub fn cot(&self) -> SocketAddr {
        format!("{}:8088", self.ip).parse().unwrap()
    }
    pub fn api(&self) -> String {
        format!("http://{}:8081", self.ip)
    }
    pub fn service_cert(&self) -> PathBuf {
        self.home.join("takgate/cert.pem")
    }

    /// The `[[link]]` of takgate's OpenTAKServer link for this instance.
    pub fn link(&self, name: &str, extra: &str) -> String {
        format!("[[link]]\nname = \"{name}\"\ntransport = \"amqp\"\naddress = \"{}\"\namqp_mode = \"opentakserver\"\nots_api_cert = \"{}\"\nreconnect_min_secs = 0.2\n{extra}\n", self.amqp(), self.service_cert().display())
    }

    /// A client of OpenTAKServer on its TCP CoT port, registered as OTS's own EUDs are
    /// (it waits for eud_handler's broker channel, then sends its position report).
    /// OTS 1.7.14 misses a client that registers before its handler's broker channel is
    /// open (and then never delivers to it): the client checks that OTS consumes its queue,
    /// and connects again when it does not, as a user would reconnect a deaf ATAK.
    pub async fn client(&self, sa: &takgate::cot::CotEvent) -> Client {
        for _ in 0..4 {
            let mut c = Client::tcp(self.cot()).await;
            tokio::time::sleep(Duration::from_millis(3500)).await;
            c.send(sa).await;
            if self.consumed(&sa.uid).await {
                return c;
            }
        }
        panic!("OpenTAKServer {} never registered client {} (its eud_handler made no queue for it)", self.name, sa.uid);
    }

    /// Whether OTS consumes the queue of EUD `uid` (it is registered and receives).
    async fn consumed(&self, uid: &str) -> bool {
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(conn) = lapin::Connection::connect(&self.amqp(), lapin::ConnectionProperties::default()).await else { continue };
            let Ok(ch) = conn.create_channel().await else { continue };
            let r = ch.queue_declare(uid.into(), lapin::options::QueueDeclareOptions { passive: true, ..Default::default() }, lapin::types::FieldTable::default()).await;
            let _ = conn.close(200, "ok".into()).await;
            if r.is_ok_and(|q| q.consumer_count() > 0) {
                return true;
            }
        }
        false
    }

    /// Rows of `sql` in this instance's database, each a line of `|`-separated fields.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let out = std::process::Command::new("psql").args(["-U", "postgres", "-h", "/var/run/postgresql", "-d", &format!("ots_{}", self.name), "-Atc", sql]).output().expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// Creates a mission on OTS with `creator`, waiting until OTS knows the EUD (its
    /// eud_handler stores a new client a moment after its first report); true when created.
    /// `api` keeps the mission's token for later calls.
    pub async fn make_mission(&self, api: &takgate::transport::ots::api::Api, name: &str, creator: &str, description: &str) -> bool {
        let mut last = String::new();
        for _ in 0..30 {
            match api.ensure_mission(name, creator, "public", description).await {
                Ok(created) => return created,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("OpenTAKServer {} never accepted mission {name} by {creator}: {last}", self.name);
    }

    /// A mission as OpenTAKServer's Marti API shows it.
    pub async fn mission(&self, name: &str) -> serde_json::Value {
        let pem = std::fs::read_to_string(self.service_cert()).unwrap();
        let api = takgate::transport::ots::api::Api::new(&self.api(), &pem).unwrap();
        api.mission(name).await.unwrap_or_else(|e| panic!("GET mission {name} on OTS {}: {e}", self.name))
    }
}

/// A tag that makes uids and callsigns unique in the databases, which persist across runs.
pub fn tag() -> String {
    format!("{:06x}", fastrand::u32(..) & 0xff_ffff)
}
