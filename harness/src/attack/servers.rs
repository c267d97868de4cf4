//! Servers that misbehave: a stand-in Berkeley master that records the claims slaves register with
//! ([`FakeMaster`]), and a server that accepts connections and never answers ([`Stalled`]).

use std::io;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use prost::Message;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use synclab::proto::berkeley as berkeley_pb;

use super::grpc::{frame, take_message};
use super::services::path;

/// A stand-in Berkeley master: answers `Register` with its epoch and remembers every registration, so a
/// test or benchmark sees the claim a slave sends its master (as anyone who can read the traffic does).
pub struct FakeMaster {
    pub addr: String,
    pub epoch: u64,
    registrations: Arc<Mutex<Vec<berkeley_pb::RegisterRequest>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMaster {
    /// Listens on 127.0.0.1 (any port).
    pub async fn start(epoch: u64) -> io::Result<FakeMaster> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let registrations = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let registrations = registrations.clone();
            async move {
                let mut conns = Vec::new();
                while let Ok((tcp, _)) = listener.accept().await {
                    let registrations = registrations.clone();
                    conns.push(tokio::spawn(async move {
                        let _ = serve_fake_master(tcp, epoch, registrations).await;
                    }));
                    conns.retain(|c: &JoinHandle<()>| !c.is_finished());
                }
            }
        });
        Ok(FakeMaster { addr, epoch, registrations, task })
    }

    /// The last registration received, if any.
    pub fn last(&self) -> Option<berkeley_pb::RegisterRequest> {
        self.registrations.lock().ok()?.last().cloned()
    }

    pub fn registrations(&self) -> usize {
        self.registrations.lock().map(|r| r.len()).unwrap_or(0)
    }
}

async fn serve_fake_master(
    tcp: TcpStream,
    epoch: u64,
    registrations: Arc<Mutex<Vec<berkeley_pb::RegisterRequest>>>,
) -> Result<(), h2::Error> {
    let mut conn = h2::server::handshake(tcp).await?;
    while let Some(request) = conn.accept().await {
        let (request, mut respond) = request?;
        let registrations = registrations.clone();
        tokio::spawn(async move {
            let is_register = request.uri().path() == path::REGISTER;
            let mut body = request.into_body();
            let mut buf = BytesMut::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
                if buf.len() > 1 << 20 {
                    break;
                }
            }
            let decoded = take_message(&mut buf).ok().flatten().and_then(|m| berkeley_pb::RegisterRequest::decode(m).ok());
            let answer = match (is_register, decoded) {
                (true, Some(req)) => {
                    if let Ok(mut r) = registrations.lock() {
                        r.push(req);
                    }
                    Some(berkeley_pb::RegisterResponse {
                        master: "fake-master".into(),
                        round_interval_nanos: 60_000_000_000,
                        rejoined: false,
                        epoch,
                    })
                }
                _ => None,
            };
            let response = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap_or_default();
            let Ok(mut send) = respond.send_response(response, false) else { return };
            let mut trailers = http::HeaderMap::new();
            match answer {
                Some(answer) => {
                    let _ = send.send_data(frame(&answer.encode_to_vec()), false);
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                }
                None => {
                    trailers.insert("grpc-status", http::HeaderValue::from_static("12"));
                }
            }
            let _ = send.send_trailers(trailers);
        });
    }
    Ok(())
}

/// A server that accepts connections and never says a word (a stalled server, or an attacker posing
/// as one). It holds up to 256 connections; it stops when dropped.
pub struct Stalled {
    pub addr: String,
    task: JoinHandle<()>,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stalled {
    /// Listens on 127.0.0.1 (any port).
    pub async fn start() -> io::Result<Stalled> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                if held.len() < 256 {
                    held.push(s);
                }
            }
        });
        Ok(Stalled { addr, task })
    }
}
