//! What each identity may do, in one table. With TLS every caller has an identity (its certificate's
//! Common Name, which the server verified against the CA); in plaintext there is none and nothing is
//! checked here (the lab's default: see SECURITY.md).
//!
//! | RPCs | who |
//! |---|---|
//! | `Alive`, `Election`, `Coordinator`, `RingElection`, `RingCoordinator`, `Follow` | `node-<from>`: the message's own sender |
//! | `BerkeleyMaster/Register` | the slave whose name, in lower case, is the identity (`kmc` registers `KMC`) |
//! | `BerkeleySlave/Adjust` | `berkeley-master` |
//! | the lab's fault RPCs | `lab` |
//! | reads: `GetTime`, `Clock/Read`, `GetState`, `Status`, every `Watch*`, health, reflection | any identity the CA signed |
//! | `/metrics` (HTTPS, a client certificate required) | [`METRICS_READERS`]: `prometheus`, `observer` (people, curl), `dashboard` (it shows the devices' error bounds) |
//!
//! The dashboard's own page asks for no client certificate (browsers present none): it shows what any
//! identity may read, and changes nothing.

use synclab_core::election::NodeId;
use tonic::{Request, Status};

use crate::net::ConnectionInfo;

/// The identities that may read a `/metrics` endpoint served over TLS.
pub const METRICS_READERS: &[&str] = &["prometheus", "observer", "dashboard"];

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed<'a> {
    /// Any identity the CA signed (reads).
    Anyone,
    /// Node `from`'s own identity, `node-<from>` (protocol messages).
    Node(NodeId),
    /// The Berkeley slave named this (its identity is the name in lower case).
    Slave(&'a str),
    /// Exactly this identity.
    Identity(&'static str),
}

/// The caller's identity: its certificate's Common Name, or `None` on a plaintext connection.
pub fn caller<T>(request: &Request<T>) -> Option<&str> {
    request.extensions().get::<ConnectionInfo>()?.identity.as_deref()
}

/// Whether `identity` may make a call that `allowed` describes.
pub fn permits(identity: &str, allowed: Allowed<'_>) -> bool {
    match allowed {
        Allowed::Anyone => true,
        Allowed::Node(id) => identity.strip_prefix("node-").is_some_and(|n| n == id.to_string()),
        Allowed::Slave(name) => identity == name.to_ascii_lowercase(),
        Allowed::Identity(only) => identity == only,
    }
}

/// Checks the caller of `request` against `allowed`; PERMISSION_DENIED names the identity and the RPC.
/// A plaintext connection (no identity) passes: plaintext checks nothing.
pub fn authorize<T>(request: &Request<T>, rpc: &str, allowed: Allowed<'_>) -> Result<(), Status> {
    match caller(request) {
        None => Ok(()),
        Some(identity) if permits(identity, allowed) => Ok(()),
        Some(identity) => {
            let who = match allowed {
                Allowed::Anyone => "anyone".to_string(),
                Allowed::Node(id) => format!("node-{id} only"),
                Allowed::Slave(name) => format!("{} only", crate::text::excerpt(&name.to_ascii_lowercase(), 64)),
                Allowed::Identity(only) => format!("{only} only"),
            };
            Err(Status::permission_denied(format!("'{}' may not call {rpc}: it is for {who}", crate::text::excerpt(identity, 64))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds() {
        assert!(permits("observer", Allowed::Anyone));
        assert!(permits("node-3", Allowed::Node(3)));
        assert!(!permits("node-2", Allowed::Node(3)));
        assert!(!permits("node-03", Allowed::Node(3)));
        assert!(!permits("observer", Allowed::Node(3)));
        assert!(permits("kmc", Allowed::Slave("KMC")));
        assert!(!permits("kmc", Allowed::Slave("MIT")));
        assert!(permits("berkeley-master", Allowed::Identity("berkeley-master")));
        assert!(!permits("observer", Allowed::Identity("berkeley-master")));
    }
}
