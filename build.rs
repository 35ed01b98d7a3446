//! Generates the TAK protocol types from proto/ with protox (a pure-Rust protobuf
//! compiler), so no system `protoc` is needed: the messages with prost, and the federation
//! service `com.atakmap.FederatedChannel` with tonic (client and server), from the methods
//! that `fig.proto` declares.
//!
//! One deliberate change in the generated service: the three client-streaming methods
//! (ServerEventStream, ServerROLStream, ClientFederateGroupsStream) are generated as
//! bidirectional streams. The HTTP/2 framing is the same, but only a streaming response
//! lets a server send its `Subscription` at once and keep the call open, which is what TAK
//! Server does and what its client expects; and only a streaming call lets our client read
//! that early reply instead of waiting for trailers that never come.
use prost_types::FileDescriptorProto;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["proto/takmessage.proto", "proto/fig.proto"], ["proto"])?;
    let fig: &FileDescriptorProto = fds.file.iter().find(|f| f.name() == "fig.proto").ok_or("fig.proto missing")?;
    let mut service = tonic_build::manual::Service::builder().name("FederatedChannel").package("com.atakmap");
    let svc = fig.service.iter().find(|s| s.name() == "FederatedChannel").ok_or("service FederatedChannel missing")?;
    for m in &svc.method {
        let client_streaming = m.client_streaming();
        // client-streaming becomes bidirectional (see above)
        let server_streaming = m.server_streaming() || client_streaming;
        let mut b = tonic_build::manual::Method::builder()
            .name(snake(m.name()))
            .route_name(m.name())
            .input_type(rust_type(m.input_type()))
            .output_type(rust_type(m.output_type()))
            .codec_path("tonic_prost::ProstCodec");
        if client_streaming {
            b = b.client_streaming();
        }
        if server_streaming {
            b = b.server_streaming();
        }
        service = service.method(b.build());
    }
    prost_build::Config::new().compile_fds(fds.clone())?;
    tonic_build::manual::Builder::new().build_transport(false).compile(&[service.build()]);
    Ok(())
}

/// `.com.atakmap.ROL` -> `super::Rol` (prost's upper camel case).
fn rust_type(t: &str) -> String {
    let name = t.rsplit('.').next().unwrap_or(t);
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let prev_upper = i > 0 && chars[i - 1].is_ascii_uppercase();
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        if i == 0 || !prev_upper || next_lower {
            out.push(*c);
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    format!("super::{out}")
}

/// `ClientROLStream` -> `client_rol_stream`, `getIdentity` -> `get_identity`.
fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit() || (p.is_ascii_uppercase() && next_lower)) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}
