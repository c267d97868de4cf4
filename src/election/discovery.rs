//! Members from the platform instead of a hand-written `--peers` list: the id from a task slot or a
//! StatefulSet pod name ([`id_from_name`]), the members from DNS (`--discover tasks.election:50054` on
//! Swarm, the headless service `election:50054` on Kubernetes), each address's id asked of the node
//! itself (its `GetState`), re-resolved as the group changes ([`Discovery::round`], [`keep_members`]).
//!
//! Nothing an answer says is trusted blindly: a name that resolves to nothing (yet) is a warning and a
//! retry; more than [`MAX_ADDRESSES`] addresses are refused; an answer with an id that is not positive
//! or from a node of another algorithm is ignored; two addresses claiming one id are a loud warning and
//! neither is trusted as that id (so two nodes that share an id never both count as its coordinator).
//! A known address that does not answer keeps its id: it is still in DNS, so still a member, and
//! whether it is alive is the election's to judge.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use synclab_core::Named;
use synclab_core::election::{Algorithm, NodeId};
use tokio::sync::Notify;

use crate::proto::election as pb;
use crate::proto::election::election_service_client::ElectionServiceClient;
use crate::rpc::{Dialer, request, with_deadline};
use crate::server::Stop;

/// The most addresses a name may resolve to; more are refused (a group has at most
/// `synclab_core::election::MAX_MEMBERS` members).
pub const MAX_ADDRESSES: usize = synclab_core::election::MAX_MEMBERS;

/// A boxed future, for the object-safe [`Resolve`] and [`Identify`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `--discover`: the name whose addresses are the members, and the port they serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverTarget {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for DiscoverTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Parses `--discover`: `HOST:PORT`, e.g. `tasks.election:50054` (a port of 0 is refused).
pub fn parse_discover(text: &str) -> Result<DiscoverTarget, String> {
    let text = text.trim();
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("'{text}' is not HOST:PORT"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.len() > 253 || host.chars().any(|c| c.is_whitespace() || c == '/' || c == ',') {
        return Err(format!("'{text}': the host must be a DNS name or an address"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(DiscoverTarget { host: host.to_string(), port }),
        _ => Err(format!("'{text}': the port must be 1-65535")),
    }
}

/// Parses `--id-from-name`: a StatefulSet pod name `NAME-ORDINAL`; the id is the ordinal + 1
/// (`election-0` is 1, `election-3` is 4).
pub fn id_from_name(name: &str) -> Result<NodeId, String> {
    let name = name.trim();
    let Some((base, ordinal)) = name.rsplit_once('-') else {
        return Err(format!("--id-from-name: '{name}' does not end in -ORDINAL (a StatefulSet pod name, e.g. election-3)"));
    };
    if base.is_empty() || base.ends_with('-') || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("--id-from-name: '{name}' does not end in -ORDINAL (a StatefulSet pod name, e.g. election-3)"));
    }
    let id = ordinal.parse::<u64>().ok().and_then(|o| o.checked_add(1)).filter(|&id| i64::try_from(id).is_ok());
    id.ok_or_else(|| format!("--id-from-name: the ordinal of '{name}' is too large for a node id"))
}

/// Turns a name into addresses (DNS in a node; a fake in tests).
pub trait Resolve: Send + Sync {
    /// Every address `host` resolves to, with `port`.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (Docker's and Kubernetes' DNS in a container).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dns;

impl Resolve for Dns {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.take(MAX_ADDRESSES + 1).collect()) })
    }
}

/// Asks the node at an address who it is.
pub trait Identify: Send + Sync {
    /// The node's state as it reports it, or `None` if it does not answer in time.
    fn identify(&self, addr: SocketAddr) -> BoxFuture<'_, Option<pb::NodeState>>;
}

/// Asks through `GetState`, with a deadline.
#[derive(Debug, Clone)]
pub struct GetState {
    pub dialer: Dialer,
    pub timeout: Duration,
}

impl Identify for GetState {
    fn identify(&self, addr: SocketAddr) -> BoxFuture<'_, Option<pb::NodeState>> {
        Box::pin(async move {
            let addr = addr.to_string();
            let channel = self.dialer.channel(&addr, self.timeout).ok()?;
            let mut client = ElectionServiceClient::new(channel);
            with_deadline(&addr, self.timeout, client.get_state(request(pb::GetStateRequest {}, self.timeout))).await.ok()
        })
    }
}

/// Why a round found no members.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The name could not be resolved.
    #[error("cannot resolve {target}: {source}")]
    Resolve { target: DiscoverTarget, source: std::io::Error },
    /// The name resolves to no address (yet).
    #[error("{target} resolves to no address (yet)")]
    Nothing { target: DiscoverTarget },
    /// The name resolves to more addresses than a group may have.
    #[error("{target} resolves to more than {MAX_ADDRESSES} addresses: refused")]
    TooMany { target: DiscoverTarget },
}

/// What one round found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Every member's address by id, this node included (its entry is the `--discover` name).
    pub members: BTreeMap<NodeId, String>,
    /// Ids that more than one address claimed: trusted as none of them.
    pub conflicts: BTreeMap<NodeId, Vec<SocketAddr>>,
    /// Addresses whose answer was ignored (an id that is not positive, another algorithm).
    pub ignored: Vec<SocketAddr>,
    /// Addresses that have not answered yet (not members until they do).
    pub silent: Vec<SocketAddr>,
    /// Members this round did not find, kept at their last address because they were found less than
    /// the forget-after time ago.
    pub kept: Vec<NodeId>,
}

/// The members of this node's group as DNS and the nodes tell them.
pub struct Discovery {
    own: NodeId,
    algorithm: Algorithm,
    target: DiscoverTarget,
    resolver: Arc<dyn Resolve>,
    identify: Arc<dyn Identify>,
    /// The id each address last answered with.
    known: HashMap<SocketAddr, NodeId>,
    /// Addresses DNS did not give but that may be members: ones the members report, and ones that sent
    /// this node messages. Each is asked like any other and kept while it answers as a member.
    extra: BTreeSet<SocketAddr>,
    /// How long a member that is no longer found stays one (see [`Discovery::forget_after`]).
    forget_after: Duration,
    /// Every member found, with its last address and when it was last found.
    last_found: BTreeMap<NodeId, (String, tokio::time::Instant)>,
}

impl Discovery {
    /// Node `own`'s (of `algorithm`) discovery of `target`'s members.
    pub fn new(own: NodeId, algorithm: Algorithm, target: DiscoverTarget, resolver: Arc<dyn Resolve>, identify: Arc<dyn Identify>) -> Self {
        Self {
            own,
            algorithm,
            target,
            resolver,
            identify,
            known: HashMap::new(),
            extra: BTreeSet::new(),
            forget_after: Duration::ZERO,
            last_found: BTreeMap::new(),
        }
    }

    /// Keeps a member that is no longer found (its task killed, its host cut off, DNS behind) for
    /// `after` at its last address, as a member that does not answer. The group's ids then do not change
    /// when a member dies and comes back within `after` (as an orchestrator restarts it, at a new
    /// address: that only redials it), and a changed set of ids costs an election: a term's owner
    /// depends on the members. Zero forgets at once.
    pub fn forget_after(mut self, after: Duration) -> Self {
        self.forget_after = after;
        self
    }

    /// Asks `ip` at the members' port in the next round (a node that sent this one a message as a
    /// member this node does not know: DNS here may lag behind the group after a partition).
    pub fn suggest(&mut self, ip: std::net::IpAddr) {
        if self.extra.len() < MAX_ADDRESSES {
            self.extra.insert(SocketAddr::new(ip, self.target.port));
        }
    }

    /// Resolves the name, asks every address its id (all at once, each with its deadline), and returns
    /// the members.
    pub async fn round(&mut self) -> Result<Round, DiscoveryError> {
        let target = self.target.clone();
        let addrs = self
            .resolver
            .resolve(&target.host, target.port)
            .await
            .map_err(|source| DiscoveryError::Resolve { target: target.clone(), source })?;
        let mut addrs: BTreeSet<SocketAddr> = addrs.into_iter().take(MAX_ADDRESSES + 1).collect();
        if addrs.is_empty() {
            return Err(DiscoveryError::Nothing { target });
        }
        if addrs.len() > MAX_ADDRESSES {
            return Err(DiscoveryError::TooMany { target });
        }
        let extra: Vec<SocketAddr> = std::mem::take(&mut self.extra).into_iter().filter(|a| !addrs.contains(a)).collect();
        addrs.extend(extra.iter().take(MAX_ADDRESSES.saturating_sub(addrs.len())));
        self.known.retain(|addr, _| addrs.contains(addr));
        let identify = self.identify.clone();
        let answers = futures::future::join_all(addrs.iter().map(|&addr| {
            let identify = identify.clone();
            async move { (addr, identify.identify(addr).await) }
        }))
        .await;
        let mut round = Round::default();
        for (addr, answer) in answers {
            match answer {
                Some(state) if state.id > 0 && state.algorithm == self.algorithm.as_str() => {
                    self.known.insert(addr, state.id as NodeId);
                    if extra.contains(&addr) {
                        self.extra.insert(addr);
                    }
                    // The members it knows, at the addresses it dials: asked in the next round.
                    for m in state.members.iter().take(MAX_ADDRESSES) {
                        if let Ok(a) = m.address.parse::<SocketAddr>()
                            && self.extra.len() < MAX_ADDRESSES
                        {
                            self.extra.insert(a);
                        }
                    }
                }
                Some(state) => {
                    tracing::warn!(%addr, id = state.id, algorithm = %state.algorithm, "ignoring a member's answer: not a positive id of this algorithm");
                    self.known.remove(&addr);
                    round.ignored.push(addr);
                }
                None if self.known.contains_key(&addr) && !extra.contains(&addr) => {}
                None => {
                    self.known.remove(&addr);
                    round.silent.push(addr);
                }
            }
        }
        let mut by_id: BTreeMap<NodeId, Vec<SocketAddr>> = BTreeMap::new();
        for (&addr, &id) in &self.known {
            by_id.entry(id).or_default().push(addr);
        }
        round.members.insert(self.own, self.target.to_string());
        for (id, mut addrs) in by_id {
            addrs.sort_unstable();
            // One address with this node's own id is this node; more are a conflict.
            if id == self.own && addrs.len() == 1 {
                continue;
            }
            if addrs.len() > 1 {
                tracing::warn!(id, addresses = ?addrs, "SEVERAL NODES CLAIM ONE ID: none of them is trusted as that id; give every node its own");
                round.conflicts.insert(id, addrs);
                continue;
            }
            round.members.insert(id, addrs[0].to_string());
        }
        let now = tokio::time::Instant::now();
        for (&id, address) in round.members.iter().filter(|(id, _)| **id != self.own) {
            self.last_found.insert(id, (address.clone(), now));
        }
        // A member claimed by several addresses is trusted as none of them, remembered or not.
        self.last_found.retain(|id, (_, found)| !round.conflicts.contains_key(id) && now.duration_since(*found) < self.forget_after);
        for (&id, (address, _)) in &self.last_found {
            if let std::collections::btree_map::Entry::Vacant(entry) = round.members.entry(id) {
                entry.insert(address.clone());
                round.kept.push(id);
            }
        }
        Ok(round)
    }
}

/// The shortest time between two rounds (a burst of failed sends starts one round).
pub const MIN_ROUND_GAP: Duration = Duration::from_millis(50);

/// Keeps `node`'s members as `discovery` finds them until `stop`: a round every `interval`, and one
/// at once when a send to a peer fails (`failed`), so a member that moved to a new address is found
/// again within a round trip, not a period.
pub async fn keep_members(
    node: crate::election::ElectionNode,
    mut discovery: Discovery,
    interval: Duration,
    failed: Arc<Notify>,
    stop: Stop,
) {
    let mut warned = false;
    loop {
        for ip in node.take_strangers() {
            discovery.suggest(ip);
        }
        match discovery.round().await {
            Ok(round) => {
                warned = false;
                node.set_members(round.members).await;
            }
            Err(e) if !warned => {
                tracing::warn!(error = %e, "no members found; trying again");
                warned = true;
            }
            Err(e) => tracing::debug!(error = %e, "no members found; trying again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = failed.notified() => {}
            () = stop.wait() => return,
        }
        tokio::time::sleep(MIN_ROUND_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn discover_is_host_and_port() {
        assert_eq!(parse_discover("tasks.election:50054"), Ok(DiscoverTarget { host: "tasks.election".into(), port: 50054 }));
        assert_eq!(parse_discover(" election:1 ").unwrap().to_string(), "election:1");
        assert_eq!(parse_discover("[::1]:50054").unwrap().host, "::1");
        for bad in ["election", "election:", ":50054", "election:0", "election:70000", "election:x", "a b:1", "a,b:1", ""] {
            assert!(parse_discover(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn id_from_a_pod_name_is_its_ordinal_plus_one() {
        assert_eq!(id_from_name("election-0"), Ok(1));
        assert_eq!(id_from_name("election-3"), Ok(4));
        assert_eq!(id_from_name("synclab-election-12"), Ok(13));
        for bad in [
            "election",
            "election-",
            "election-x",
            "-3",
            "election-3a",
            "election--1",
            "election-99999999999999999999",
            "election-9223372036854775807",
        ] {
            let e = id_from_name(bad).expect_err(bad);
            assert!(e.contains("--id-from-name"), "the error names the flag: {e}");
        }
        assert_eq!(id_from_name("election-9223372036854775806"), Ok(i64::MAX as u64));
    }

    /// A resolver whose answer a test sets.
    pub(crate) struct FakeDns(pub Mutex<std::io::Result<Vec<SocketAddr>>>);

    impl Resolve for FakeDns {
        fn resolve<'a>(&'a self, _: &'a str, _: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
            let answer = match &*self.0.lock().unwrap() {
                Ok(a) => Ok(a.clone()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            Box::pin(async move { answer })
        }
    }

    /// Nodes that answer with the state a test sets (none: silent).
    #[derive(Default)]
    struct FakeNodes(Mutex<HashMap<SocketAddr, pb::NodeState>>);

    impl Identify for FakeNodes {
        fn identify(&self, addr: SocketAddr) -> BoxFuture<'_, Option<pb::NodeState>> {
            let state = self.0.lock().unwrap().get(&addr).cloned();
            Box::pin(async move { state })
        }
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 50054))
    }

    fn node(id: i64, algorithm: &str) -> pb::NodeState {
        pb::NodeState { id, algorithm: algorithm.into(), ..Default::default() }
    }

    fn setup(answer: Vec<SocketAddr>) -> (Arc<FakeDns>, Arc<FakeNodes>, Discovery) {
        let dns = Arc::new(FakeDns(Mutex::new(Ok(answer))));
        let nodes = Arc::new(FakeNodes::default());
        let target = parse_discover("tasks.election:50054").unwrap();
        let discovery = Discovery::new(1, Algorithm::Bully, target, dns.clone(), nodes.clone());
        (dns, nodes, discovery)
    }

    #[tokio::test]
    async fn members_are_the_ids_the_addresses_answer_with() {
        let (dns, nodes, mut discovery) = setup((1..=3).map(addr).collect());
        for i in 1..=3 {
            nodes.0.lock().unwrap().insert(addr(i), node(i64::from(i), "bully"));
        }
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(round.members[&2], "10.0.0.2:50054");
        assert_eq!(round.members[&1], "tasks.election:50054", "this node's own entry is the name");

        // Node 3 leaves DNS, node 4 comes: the group shrinks and grows.
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(2), addr(4)]);
        nodes.0.lock().unwrap().insert(addr(4), node(4, "bully"));
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);

        // A member that stops answering stays a member while DNS lists it; one never heard is not yet.
        nodes.0.lock().unwrap().remove(&addr(4));
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(2), addr(4), addr(5)]);
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(round.silent, vec![addr(5)]);

        // Node 2 comes back at another address (a restarted task): its id follows it.
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(7), addr(4)]);
        nodes.0.lock().unwrap().insert(addr(7), node(2, "bully"));
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members[&2], "10.0.0.7:50054");
    }

    /// A member that is no longer found stays one for the forget-after time, at its last address: a task
    /// killed and restarted at a new address within it only moves (no change of ids, so no election);
    /// one gone for longer is forgotten; an id two addresses claim is trusted as neither, remembered or not.
    #[tokio::test]
    async fn a_member_no_longer_found_is_kept_for_the_forget_after_time() {
        let (dns, nodes, discovery) = setup((1..=3).map(addr).collect());
        // Rounds against fake DNS and nodes take microseconds: a second is far from every check.
        let mut discovery = discovery.forget_after(Duration::from_secs(1));
        for i in 1..=3 {
            nodes.0.lock().unwrap().insert(addr(i), node(i64::from(i), "bully"));
        }
        assert_eq!(discovery.round().await.unwrap().members.len(), 3);
        // Node 3's task is killed: DNS drops it at once.
        nodes.0.lock().unwrap().remove(&addr(3));
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(2)]);
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!((round.members[&3].as_str(), round.kept.clone()), ("10.0.0.3:50054", vec![3]));
        // Restarted at a new address within the time: the same ids, node 3 at its new address.
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(2), addr(8)]);
        nodes.0.lock().unwrap().insert(addr(8), node(3, "bully"));
        let round = discovery.round().await.unwrap();
        assert_eq!((round.members[&3].as_str(), round.kept.len()), ("10.0.0.8:50054", 0));
        // Gone for good: kept until a second after it was last found, then forgotten.
        nodes.0.lock().unwrap().remove(&addr(8));
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(2)]);
        assert!(discovery.round().await.unwrap().members.contains_key(&3));
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(discovery.round().await.unwrap().members.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        // Two addresses claim id 2: neither is trusted, and the remembered one is not kept either.
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(2), addr(9)]);
        nodes.0.lock().unwrap().insert(addr(9), node(2, "bully"));
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1], "{round:?}");
    }

    /// DNS here may lag behind the group (after a partition, Docker's DNS on one node missed a task
    /// for tens of seconds): members the others report, and nodes that sent this one messages, are asked
    /// too, and count once they answer for themselves; one that stops answering is dropped.
    #[tokio::test]
    async fn members_dns_does_not_list_yet_are_found_through_the_others() {
        let (_dns, nodes, mut discovery) = setup(vec![addr(1), addr(2)]);
        {
            let mut n = nodes.0.lock().unwrap();
            n.insert(addr(1), node(1, "bully"));
            let mut two = node(2, "bully");
            two.members =
                vec![pb::Member { id: 3, address: addr(3).to_string() }, pb::Member { id: 2, address: "tasks.election:50054".into() }];
            n.insert(addr(2), two);
            n.insert(addr(3), node(3, "bully"));
            n.insert(SocketAddr::from(([10, 0, 0, 4], 50054)), node(4, "bully"));
        }
        assert_eq!(discovery.round().await.unwrap().members.len(), 2, "only DNS's answer the first time");
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3], "node 3, which node 2 reports, answered for itself");
        discovery.suggest(std::net::IpAddr::from([10, 0, 0, 4]));
        let round = discovery.round().await.unwrap();
        assert_eq!(
            round.members.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "the node that sent a message, at the members' port"
        );
        // Node 3 stops answering and DNS never listed it: it is no member.
        nodes.0.lock().unwrap().remove(&addr(3));
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
        // A suggestion that answers as nothing is dropped.
        discovery.suggest(std::net::IpAddr::from([10, 0, 0, 9]));
        assert!(!discovery.round().await.unwrap().members.contains_key(&9));
    }

    #[tokio::test]
    async fn hostile_or_empty_answers_are_not_trusted() {
        let (dns, nodes, mut discovery) = setup(vec![]);
        assert!(matches!(discovery.round().await, Err(DiscoveryError::Nothing { .. })), "nothing yet is an error to retry");
        *dns.0.lock().unwrap() = Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"));
        assert!(matches!(discovery.round().await, Err(DiscoveryError::Resolve { .. })));
        *dns.0.lock().unwrap() =
            Ok((0..=MAX_ADDRESSES as u32).map(|i| SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000u32 + i), 1))).collect());
        assert!(matches!(discovery.round().await, Err(DiscoveryError::TooMany { .. })), "more than the cap is refused");

        *dns.0.lock().unwrap() = Ok((1..=6).map(addr).collect());
        {
            let mut n = nodes.0.lock().unwrap();
            n.insert(addr(1), node(1, "bully"));
            n.insert(addr(2), node(5, "bully"));
            n.insert(addr(3), node(5, "bully")); // two addresses claim id 5
            n.insert(addr(4), node(-7, "bully")); // an absurd id
            n.insert(addr(5), node(0, "bully"));
            n.insert(addr(6), node(6, "ring")); // another algorithm's node
        }
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1], "neither claimant of 5 is trusted, nor any absurd answer");
        assert_eq!(round.conflicts.get(&5), Some(&vec![addr(2), addr(3)]));
        assert_eq!(round.ignored, vec![addr(4), addr(5), addr(6)]);

        // Another address claiming this node's own id is a conflict too.
        nodes.0.lock().unwrap().insert(addr(6), node(1, "bully"));
        let round = discovery.round().await.unwrap();
        assert!(round.conflicts.contains_key(&1), "{round:?}");
        // The conflict ends when one of them goes.
        *dns.0.lock().unwrap() = Ok(vec![addr(1), addr(2)]);
        let round = discovery.round().await.unwrap();
        assert_eq!(round.members.keys().copied().collect::<Vec<_>>(), vec![1, 5]);
        assert!(round.conflicts.is_empty());
    }

    /// Real nodes in this process on loopback, each finding the others through a resolver whose answer
    /// the test changes: the group grows (the new highest id takes over) and shrinks (the next highest
    /// does), and agrees each time.
    mod in_process {
        use super::*;
        use crate::election::{ElectionNode, NodeConfig, agreement};
        use crate::server::StopHandle;

        struct Member {
            node: ElectionNode,
            addr: SocketAddr,
            stop: StopHandle,
        }

        async fn start(id: NodeId, algorithm: Algorithm, dns: Arc<FakeDns>) -> Member {
            let ms = Duration::from_millis;
            let target = parse_discover("tasks.election:50054").unwrap();
            let config = NodeConfig {
                id,
                peers: BTreeMap::from([(id, target.to_string())]),
                algorithm,
                heartbeat: ms(50),
                timeout: ms(200),
                rpc_timeout: ms(100),
                probe_timeout: ms(25),
                election_stagger: Duration::ZERO,
                detector: synclab_core::election::Detector::Fixed,
                state_dir: None,
                tls: None,
                lab: false,
            };
            let node = ElectionNode::new(config).unwrap();
            let listener = crate::server::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = crate::election::server(&node).await.unwrap();
            let (stop, stopped) = Stop::new();
            tokio::spawn({
                let stopped = stopped.clone();
                async move { server.serve(listener, stopped).await }
            });
            let identify = GetState { dialer: Dialer::plaintext(), timeout: ms(100) };
            let discovery = Discovery::new(id, algorithm, target, dns, Arc::new(identify));
            tokio::spawn(keep_members(node.clone(), discovery, ms(100), node.peer_failures(), stopped.clone()));
            tokio::spawn(node.clone().run(stopped));
            Member { node, addr, stop }
        }

        async fn agreed(members: &[&Member], coordinator: NodeId, ids: &[i64]) {
            let end = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut states = Vec::new();
                for m in members {
                    states.push(m.node.snapshot().await);
                }
                let all_know = states.iter().all(|s| s.members.iter().map(|m| m.id).collect::<Vec<_>>() == ids);
                if all_know && agreement(&states).map(|(c, _)| c) == Some(coordinator) {
                    return;
                }
                let seen: Vec<_> = states.iter().map(|s| (s.id, s.role, s.term, s.coordinator, s.members.len())).collect();
                assert!(tokio::time::Instant::now() < end, "no agreement on {coordinator} among {ids:?}: {seen:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        async fn grows_and_shrinks(algorithm: Algorithm) {
            let dns = Arc::new(FakeDns(Mutex::new(Ok(vec![]))));
            let mut nodes = Vec::new();
            for id in 1..=3 {
                nodes.push(start(id, algorithm, dns.clone()).await);
            }
            *dns.0.lock().unwrap() = Ok(nodes.iter().map(|m| m.addr).collect());
            agreed(&nodes.iter().collect::<Vec<_>>(), 3, &[1, 2, 3]).await;

            // Scaled up: node 4 appears in DNS and takes over (Bully) or joins the ring.
            nodes.push(start(4, algorithm, dns.clone()).await);
            *dns.0.lock().unwrap() = Ok(nodes.iter().map(|m| m.addr).collect());
            agreed(&nodes.iter().collect::<Vec<_>>(), 4, &[1, 2, 3, 4]).await;

            // Scaled down: node 4 stops and leaves DNS; the others shrink the group and agree on 3.
            let gone = nodes.pop().unwrap();
            gone.stop.stop();
            *dns.0.lock().unwrap() = Ok(nodes.iter().map(|m| m.addr).collect());
            agreed(&nodes.iter().collect::<Vec<_>>(), 3, &[1, 2, 3]).await;

            // Another address claims id 2 (a misconfigured node): neither is trusted as 2, and the
            // group of the others carries on with one coordinator.
            let impostor = start(2, algorithm, dns.clone()).await;
            *dns.0.lock().unwrap() = Ok(nodes.iter().map(|m| m.addr).chain([impostor.addr]).collect());
            agreed(&[&nodes[0], &nodes[2]], 3, &[1, 3]).await;
            for m in nodes.iter().chain([&impostor]) {
                m.stop.stop();
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_bully_group_found_in_dns_grows_and_shrinks() {
            grows_and_shrinks(Algorithm::Bully).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_ring_found_in_dns_grows_and_shrinks() {
            grows_and_shrinks(Algorithm::Ring).await;
        }
    }
}
