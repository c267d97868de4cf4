//! Leader election over gRPC: the node that feeds a Bully or Ring machine (`synclab_core::election`)
//! from the network ([`node`]), its members found in DNS ([`discovery`]), its state file ([`state`]), the conversions to and from the wire
//! ([`convert`]), and what observers conclude from the nodes' states ([`agreement`]).

pub mod convert;
pub mod discovery;
mod line;
pub mod node;
pub mod peer;
pub mod state;

use synclab_core::election::{NodeId, Term};

pub use node::{ElectionNode, NodeConfig, NodeError, server};

use crate::proto::election as pb;

/// The coordinator and term a set of node states agree on: every state names the same coordinator in
/// the same term, that coordinator's own state says it rules, and every other node follows. `None`
/// while any node disagrees, runs an election, or rules beside another.
pub fn agreement(states: &[pb::NodeState]) -> Option<(NodeId, Term)> {
    let first = states.first()?;
    let (coordinator, term) = (first.coordinator, first.term);
    if coordinator <= 0 {
        return None;
    }
    let settled = states.iter().all(|s| {
        let role = if s.id == coordinator { pb::Role::Coordinator } else { pb::Role::Follower };
        s.coordinator == coordinator && s.term == term && s.role == role as i32
    });
    settled.then_some((coordinator as NodeId, term))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: i64, role: pb::Role, term: u64, coordinator: i64) -> pb::NodeState {
        pb::NodeState { id, role: role as i32, term, coordinator, ..Default::default() }
    }

    #[test]
    fn agreement_needs_one_ruler_and_followers_in_one_term() {
        use pb::Role::{Candidate, Coordinator, Follower};
        let settled = [state(1, Follower, 4, 3), state(2, Follower, 4, 3), state(3, Coordinator, 4, 3)];
        assert_eq!(agreement(&settled), Some((3, 4)));
        assert_eq!(agreement(&settled[..2]), Some((3, 4)), "an unreachable coordinator's followers still agree");
        assert_eq!(agreement(&[]), None);
        let cases = [
            [state(1, Follower, 4, 3), state(2, Follower, 5, 3), state(3, Coordinator, 4, 3)],
            [state(1, Follower, 4, 3), state(2, Follower, 4, 2), state(3, Coordinator, 4, 3)],
            [state(1, Candidate, 4, 3), state(2, Follower, 4, 3), state(3, Coordinator, 4, 3)],
            [state(1, Follower, 4, 3), state(2, Coordinator, 4, 3), state(3, Coordinator, 4, 3)],
            [state(1, Follower, 4, 0), state(2, Follower, 4, 0), state(3, Follower, 4, 0)],
            [state(1, Follower, 4, 3), state(2, Follower, 4, 3), state(3, Follower, 4, 3)],
        ];
        for states in cases {
            assert_eq!(agreement(&states), None, "{states:?}");
        }
    }
}
