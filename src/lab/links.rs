//! Link faults an experiment sets on a process's links to its peers (`Lab/SetLinks`): dropped messages
//! (a partition), delay with jitter, random loss. They work inside the process, on its own messages, so
//! they need nothing of the kernel (this machine's has no netem) and act the same in compose and in one
//! process. Off unless the process was started with `--lab` and a lab set them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use synclab_core::election::NodeId;

use crate::lock::lock;

/// The faults on one link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkFault {
    /// Every message both ways is dropped.
    pub drop: bool,
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability that a message is lost, 0 to 1.
    pub loss: f64,
}

impl LinkFault {
    /// Whether it does anything.
    pub fn is_fault(&self) -> bool {
        self.drop || !self.delay.is_zero() || !self.jitter.is_zero() || self.loss > 0.0
    }
}

/// What happens to one outgoing message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// It goes, after this long.
    Pass(Duration),
    /// It is lost: the sender hears nothing before its deadline.
    Lost,
}

/// A process's link faults, by peer.
#[derive(Debug, Default)]
pub struct LinkFaults {
    /// The peers this process has links to.
    peers: Mutex<Vec<NodeId>>,
    state: Mutex<(BTreeMap<NodeId, LinkFault>, u64)>,
}

/// Faults that name a link this process does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {0} is not a peer of this node: there is no such link")]
pub struct NoSuchLink(pub NodeId);

impl LinkFaults {
    /// No faults yet, on the links to `peers`.
    pub fn new(peers: impl IntoIterator<Item = NodeId>) -> Self {
        Self { peers: Mutex::new(peers.into_iter().collect()), state: Mutex::default() }
    }

    /// The peers changed (members found by discovery); faults on links that are gone are dropped.
    pub fn set_peers(&self, peers: impl IntoIterator<Item = NodeId>) {
        let peers: Vec<NodeId> = peers.into_iter().collect();
        lock(&self.state).0.retain(|p, _| peers.contains(p));
        *lock(&self.peers) = peers;
    }

    /// Replaces every fault (an empty map heals all links); `seed` seeds loss and jitter. Nothing
    /// changes if a fault names a link this process does not have.
    pub fn set(&self, faults: BTreeMap<NodeId, LinkFault>, seed: u64) -> Result<usize, NoSuchLink> {
        let peers = lock(&self.peers).clone();
        if let Some(peer) = faults.keys().find(|p| !peers.contains(p)) {
            return Err(NoSuchLink(*peer));
        }
        let faults: BTreeMap<NodeId, LinkFault> = faults.into_iter().filter(|(_, f)| f.is_fault()).collect();
        let n = faults.len();
        *lock(&self.state) = (faults, seed.max(1));
        Ok(n)
    }

    /// What happens to a message to `peer` now.
    pub fn outgoing(&self, peer: NodeId) -> Verdict {
        let mut state = lock(&self.state);
        let (faults, rng) = &mut *state;
        let Some(fault) = faults.get(&peer).copied() else { return Verdict::Pass(Duration::ZERO) };
        if fault.drop || (fault.loss > 0.0 && uniform(rng) < fault.loss) {
            return Verdict::Lost;
        }
        let jitter = fault.jitter.mul_f64(uniform(rng));
        Verdict::Pass(fault.delay + jitter)
    }

    /// Whether messages from `peer` are dropped (a partition cuts both ways).
    pub fn incoming_dropped(&self, peer: NodeId) -> bool {
        lock(&self.state).0.get(&peer).is_some_and(|f| f.drop)
    }
}

/// A uniform number in [0, 1) from an xorshift64* generator.
fn uniform(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let x = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_apply_per_peer_and_heal() {
        let links = LinkFaults::new([2, 3, 4, 5]);
        assert_eq!(links.outgoing(2), Verdict::Pass(Duration::ZERO));
        let ms = Duration::from_millis;
        let faults = BTreeMap::from([
            (2, LinkFault { drop: true, ..LinkFault::default() }),
            (3, LinkFault { delay: ms(20), jitter: ms(10), ..LinkFault::default() }),
            (4, LinkFault { loss: 0.5, ..LinkFault::default() }),
            (5, LinkFault::default()),
        ]);
        assert_eq!(links.set(faults, 7), Ok(3), "a link without a fault is not counted");
        assert_eq!(links.outgoing(2), Verdict::Lost);
        assert!(links.incoming_dropped(2) && !links.incoming_dropped(3));
        for _ in 0..100 {
            match links.outgoing(3) {
                Verdict::Pass(d) => assert!(d >= ms(20) && d < ms(30), "{d:?}"),
                Verdict::Lost => panic!("a delayed link lost a message"),
            }
        }
        let lost = (0..1000).filter(|_| links.outgoing(4) == Verdict::Lost).count();
        assert!((400..600).contains(&lost), "{lost} of 1000 lost at 50%");
        let unknown = BTreeMap::from([(9, LinkFault { drop: true, ..LinkFault::default() })]);
        assert_eq!(links.set(unknown, 1), Err(NoSuchLink(9)));
        assert_eq!(links.outgoing(2), Verdict::Lost, "a refused change changes nothing");
        links.set(BTreeMap::new(), 1).unwrap();
        assert_eq!(links.outgoing(2), Verdict::Pass(Duration::ZERO));
    }
}
