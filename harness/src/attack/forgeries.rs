//! Forged messages: election messages a hardened node refuses (and the code it refuses them with), and
//! Berkeley requests with any claim.

use bytes::Bytes;

use synclab::proto::berkeley as berkeley_pb;
use synclab::proto::election as election_pb;

use super::grpc::{code, encode};
use super::services::path;

/// One forged election message.
#[derive(Debug, Clone)]
pub struct Forgery {
    /// What it is, for tables and assertions.
    pub label: String,
    pub path: &'static str,
    pub message: Bytes,
    /// What a hardened node answers (a gRPC code): terms beyond 2^53 or 2^20 above the receiver's,
    /// non-ids and strangers are INVALID_ARGUMENT, a message for another node FAILED_PRECONDITION, a
    /// message larger than the request limit RESOURCE_EXHAUSTED.
    pub expected: i32,
}

/// 2^53, the largest term a message may carry.
pub const MAX_TERM: u64 = 1 << 53;

/// Forged messages of every election kind for node `receiver` of a group whose members include
/// `member` (another node, lower than `receiver`, so a Bully `Election` from it is in order) and whose
/// term is about `term`: impossible and wrapping terms, terms too far ahead, non-ids, strangers, a ring
/// message of 1,000,000 ids and messages addressed to another node.
pub fn election_forgeries(receiver: i64, member: i64, term: u64) -> Vec<Forgery> {
    use election_pb::{AliveRequest, CoordinatorRequest, ElectionRequest, RingCoordinatorRequest, RingElectionRequest};
    let bad_terms: [(&str, u64); 4] = [
        ("term 2^64-1", u64::MAX),
        ("term 2^53+1", MAX_TERM + 1),
        ("term 2^53-1", MAX_TERM - 1),
        // 2^21 above the term the caller read: still more than 2^20 above the node's if an election
        // raised it meanwhile.
        ("term +2^21", term + (1 << 21)),
    ];
    let bad_ids: [(&str, i64); 4] = [("id 0", 0), ("id -1", -1), ("id i64::MIN", i64::MIN), ("unknown id 999", 999)];
    let mut out = Vec::new();
    let mut push = |label: String, path: &'static str, message: Bytes, expected: i32| out.push(Forgery { label, path, message, expected });
    for (what, t) in bad_terms {
        push(
            format!("Election, {what}"),
            path::ELECTION,
            encode(&ElectionRequest { from: member, term: t, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("Coordinator, {what}"),
            path::COORDINATOR,
            encode(&CoordinatorRequest { from: member, term: t, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("Alive, {what}"),
            path::ALIVE,
            encode(&AliveRequest { from: member, term: t, coordinator: member, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("RingElection, {what}"),
            path::RING_ELECTION,
            encode(&RingElectionRequest { from: member, term: t, initiator: member, ids: vec![member], to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("RingCoordinator, {what}"),
            path::RING_COORDINATOR,
            encode(&RingCoordinatorRequest { from: member, term: t, coordinator: member, initiator: member, to: receiver }),
            code::INVALID_ARGUMENT,
        );
    }
    for (what, id) in bad_ids {
        push(
            format!("Alive from {what}"),
            path::ALIVE,
            encode(&AliveRequest { from: id, term, coordinator: 0, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        // Coordinator 0 means "none": a valid heartbeat.
        if id != 0 {
            push(
                format!("Alive naming coordinator {what}"),
                path::ALIVE,
                encode(&AliveRequest { from: member, term, coordinator: id, to: receiver }),
                code::INVALID_ARGUMENT,
            );
        }
        push(
            format!("Coordinator from {what}"),
            path::COORDINATOR,
            encode(&CoordinatorRequest { from: id, term, to: receiver }),
            code::INVALID_ARGUMENT,
        );
        push(
            format!("RingElection with {what}"),
            path::RING_ELECTION,
            encode(&RingElectionRequest { from: member, term, initiator: member, ids: vec![member, id], to: receiver }),
            code::INVALID_ARGUMENT,
        );
    }
    let ids: Vec<i64> = (0..1_000_000).map(|i| 1 + i % 3).collect();
    push(
        "RingElection with 1,000,000 ids".into(),
        path::RING_ELECTION,
        encode(&RingElectionRequest { from: member, term, initiator: 1, ids, to: receiver }),
        code::RESOURCE_EXHAUSTED,
    );
    let elsewhere = receiver + 1000;
    push(
        "Alive for another node".into(),
        path::ALIVE,
        encode(&AliveRequest { from: member, term, coordinator: 0, to: elsewhere }),
        code::FAILED_PRECONDITION,
    );
    push(
        "Election for another node".into(),
        path::ELECTION,
        encode(&ElectionRequest { from: member, term, to: elsewhere }),
        code::FAILED_PRECONDITION,
    );
    push(
        "Coordinator for another node".into(),
        path::COORDINATOR,
        encode(&CoordinatorRequest { from: member, term, to: elsewhere }),
        code::FAILED_PRECONDITION,
    );
    out
}

/// A forged heartbeat from `from` (a member) with `term`, for node `to`.
pub fn forged_alive(from: i64, term: u64, to: i64) -> Bytes {
    encode(&election_pb::AliveRequest { from, term, coordinator: from, to })
}

/// Five heartbeats node `receiver` refuses, from `member` or posing as others: term 2^64-1, term 2^53-1
/// (too far ahead of a young group), a stranger (999), one for another node, and sender 0. The first
/// three and the last are INVALID_ARGUMENT, the fourth FAILED_PRECONDITION.
pub fn invalid_alives(receiver: i64, member: i64) -> [Bytes; 5] {
    [
        forged_alive(member, u64::MAX, receiver),
        forged_alive(member, MAX_TERM - 1, receiver),
        forged_alive(999, 1, receiver),
        forged_alive(member, 1, receiver + 1000),
        forged_alive(0, 1, receiver),
    ]
}

/// A `Register` message.
pub fn register_request(name: &str, address: &str, claim: &[u8]) -> Bytes {
    encode(&berkeley_pb::RegisterRequest { name: name.into(), address: address.into(), claim: claim.to_vec() })
}

/// An `Adjust` message.
pub fn adjust_request(adjustment_nanos: i64, round: u64, epoch: u64, claim: &[u8]) -> Bytes {
    encode(&berkeley_pb::AdjustRequest { adjustment_nanos, round, epoch, claim: claim.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins that every election message kind is forged, and that the ring of 1,000,000 ids is that large.
    #[test]
    fn forgeries_cover_every_kind() {
        let f = election_forgeries(3, 1, 10);
        for kind in ["Election", "Coordinator", "Alive", "RingElection", "RingCoordinator"] {
            assert!(f.iter().any(|g| g.label.starts_with(kind)), "{kind}");
        }
        let huge = f.iter().find(|g| g.label.contains("1,000,000")).unwrap();
        assert!(huge.message.len() > 1_000_000);
    }
}
