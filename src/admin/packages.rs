//! `POST /api/certs/package`: an ATAK/WinTAK/iTAK connection data package for a device,
//! made with the CA of `[admin] certs_dir` (a `takgate certs ca` directory), as
//! `takgate certs package` makes it: the client's certificate (issued the first time, reused
//! after), the CA alone as truststore, the connection preferences. The CA's key never leaves
//! the directory.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{fail, St};
use crate::certs::{Authority, Kind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PackageRequest {
    /// The device's (and its certificate's) common name.
    cn: String,
    /// How the device reaches takgate.
    server: String,
    #[serde(default = "tls_port")]
    port: u16,
    #[serde(default)]
    quic_port: Option<u16>,
    /// Protects the two .p12 files (ATAK's default "atakatak").
    #[serde(default = "atak_password")]
    password: String,
    /// Validity of a newly issued client certificate.
    #[serde(default = "days")]
    days: u32,
}

fn tls_port() -> u16 {
    8089
}
fn atak_password() -> String {
    "atakatak".into()
}
fn days() -> u32 {
    365
}

/// A common name that can name files in the CA directory.
fn plain(cn: &str) -> bool {
    !cn.is_empty() && cn.len() <= 64 && cn.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && !cn.starts_with('.') && cn != "ca"
}

pub(super) async fn package(State(st): St, Json(r): Json<PackageRequest>) -> Response {
    let Some(dir) = st.certs_dir.clone() else {
        return fail(StatusCode::NOT_FOUND, "no [admin] certs_dir is configured (a `takgate certs ca` directory): connection packages cannot be made");
    };
    if !plain(&r.cn) {
        return fail(StatusCode::BAD_REQUEST, format!("cn {:?}: use letters, digits, '-', '_' or '.' (at most 64)", r.cn));
    }
    if r.server.trim().is_empty() || r.port == 0 {
        return fail(StatusCode::BAD_REQUEST, "server and port are required");
    }
    let made = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let ca = Authority::load(&dir)?;
        let (cert, key) = (dir.join(format!("{}.pem", r.cn)), dir.join(format!("{}.key", r.cn)));
        let (cert, key) = if cert.exists() && key.exists() { (cert, key) } else { ca.issue(Kind::Client, &r.cn, &[], r.days)? };
        let c = crate::package::Connection { cn: r.cn.clone(), server: r.server.trim().to_owned(), port: r.port, quic_port: r.quic_port, password: r.password };
        crate::package::build(&c, &cert, &key, &ca.ca)
    })
    .await;
    match made {
        Ok(Ok(zip)) => {
            tracing::info!("admin API: connection package made");
            ([(header::CONTENT_TYPE, "application/zip".to_string()), (header::CONTENT_DISPOSITION, "attachment; filename=\"takgate-connection.zip\"".to_string())], zip).into_response()
        }
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn common_names_that_could_name_other_files_are_refused() {
        for bad in ["", "../ca", "ca", ".hidden", "a/b", "x y"] {
            assert!(!super::plain(bad), "{bad:?}");
        }
        assert!(super::plain("alice-1.team_b"));
    }
}
