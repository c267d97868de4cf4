//! Every request message of `proto/synclab/**`, decoded from arbitrary bytes (as the server's prost
//! decoder does) and handed to the handler that serves it, and NTP datagrams to the NTP server's logic
//! (its strict walk of extension fields, which NTS will carry): the gRPC service methods themselves where
//! they need no socket (election node, Berkeley master, time server, clock, lab), and for the Berkeley
//! slave the `Slave::adjust` its edge calls.
//!
//! The first byte picks the request type, the second sets knobs (algorithm, whether the slave is
//! registered and the adjustment carries its claim, one or two clocks), the rest is the message. Checked:
//! nothing panics; every answer is a typed refusal (a status of the codes the handlers use) or a valid
//! value; the election conversions refuse every id that is not positive and round-trip every message they
//! accept; a slave applies an adjustment only with its claim, its master's epoch, a new round and a size
//! within its maximum, and never the same round twice.

#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use synclab::berkeley::master::{MAX_CLAIM_LEN, MIN_CLAIM_LEN, Master, MasterConfig, MasterService};
use synclab::berkeley::slave::{AdjustError, Slave};
use synclab::clock::{ClockService, ClockSet, LiveClock};
use synclab::cristian::TimeServer;
use synclab::election::convert::{Incoming, Outgoing};
use synclab::election::{ElectionNode, NodeConfig};
use synclab::lab::{LabService, LinkFaults};
use synclab::proto::berkeley::berkeley_master_server::BerkeleyMaster;
use synclab::proto::berkeley::{AdjustRequest, RegisterRequest, StatusRequest, WatchRoundsRequest};
use synclab::proto::clock::ReadRequest;
use synclab::proto::clock::clock_server::Clock;
use synclab::proto::election as pb;
use synclab::proto::election::election_service_server::ElectionService;
use synclab::proto::lab::lab_server::Lab;
use synclab::proto::lab::{BumpClockRequest, SetDriftRequest, SetLinksRequest, StrobeRequest};
use synclab::proto::time::baseline_time_service_server::BaselineTimeService;
use synclab::proto::time::time_service_server::TimeService;
use synclab::proto::time::{GetTimeRequest, GetTimeStringRequest};
use synclab::rpc::Dialer;
use synclab::server::{Stop, Watchers};
use synclab_core::clock::ClockConfig;
use synclab_core::election::{Algorithm, Detector, MAX_MEMBERS, MAX_TERM, Message, NodeId};
use synclab_core::name::{check_address, check_name};
use tonic::{Code, Request, Response, Status};

/// This node's id in the election group, and the group.
const NODE: NodeId = 3;
const GROUP: [NodeId; 5] = [1, 2, 3, 4, 5];

fn decode<T: prost::Message + Default>(bytes: &[u8]) -> Option<T> {
    T::decode(bytes).ok()
}

/// A refusal is a status of the codes the handlers use, with a message.
fn refused(status: &Status) {
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::NotFound
                | Code::AlreadyExists
                | Code::ResourceExhausted
                | Code::PermissionDenied
                | Code::Unavailable
        ),
        "unexpected status {status:?}"
    );
    assert!(!status.message().is_empty(), "a refusal without a reason: {status:?}");
}

fn answered<T>(result: Result<Response<T>, Status>) -> Option<T> {
    match result {
        Ok(response) => Some(response.into_inner()),
        Err(status) => {
            refused(&status);
            None
        }
    }
}

fn clock(name: &str) -> LiveClock {
    LiveClock::new(name, ClockConfig::default()).expect("a valid clock")
}

fn clocks(two: bool) -> ClockSet {
    let mut clocks = vec![clock("KMC")];
    if two {
        clocks.push(clock("MIT"));
    }
    ClockSet::new(clocks)
}

fn node(ring: bool) -> ElectionNode {
    // Closed ports on loopback: a handler that makes the node send (an answer, a line to a coordinator it
    // now follows) has its dial refused at once, and the runtime is dropped with the input.
    let peers: BTreeMap<NodeId, String> = GROUP.iter().map(|&id| (id, format!("127.0.0.1:{}", 1 + id))).collect();
    ElectionNode::new(NodeConfig {
        id: NODE,
        peers,
        algorithm: if ring { Algorithm::Ring } else { Algorithm::Bully },
        heartbeat: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        rpc_timeout: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        election_stagger: Duration::ZERO,
        detector: Detector::Fixed,
        state_dir: None,
        tls: None,
        lab: false,
    })
    .expect("a valid node")
}

/// The conversion every protocol request goes through, checked on its own: it accepts exactly the
/// requests whose ids are positive (and, for a ring, at most `MAX_MEMBERS` of them), and what it
/// accepts goes back to the same request.
fn convert<T: Incoming + PartialEq + std::fmt::Debug>(request: &T, valid: bool, wire: impl Fn(Outgoing) -> Option<T>) {
    match request.message() {
        Ok(message) => {
            assert!(valid, "{request:?} accepted as {message:?}");
            if let Message::RingElection { ids, .. } = &message {
                assert!(ids.len() <= MAX_MEMBERS);
            }
            let (from, to) = (request.from(), request.to());
            if from > 0 && to > 0 {
                let back = wire(Outgoing::new(from as NodeId, to as NodeId, message)).expect("the same kind of request");
                assert_eq!(request, &back, "does not round-trip");
            }
        }
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(!valid, "{request:?} refused: {status:?}");
        }
    }
}

fn reply(result: Result<Response<pb::Reply>, Status>) {
    if let Some(reply) = answered(result) {
        assert_eq!(reply.from, NODE as i64);
        assert!(reply.term <= MAX_TERM);
        assert!(reply.coordinator >= 0);
    }
}

async fn election(kind: u8, knobs: u8, bytes: &[u8]) -> Option<()> {
    let node = node(knobs & 1 != 0);
    match kind {
        0 => {
            let r: pb::ElectionRequest = decode(bytes)?;
            convert(&r, true, |o| if let Outgoing::Election(r) = o { Some(r) } else { None });
            reply(node.election(Request::new(r)).await);
        }
        1 => {
            let r: pb::CoordinatorRequest = decode(bytes)?;
            convert(&r, true, |o| if let Outgoing::Coordinator(r) = o { Some(r) } else { None });
            reply(node.coordinator(Request::new(r)).await);
        }
        2 => {
            let r: pb::AliveRequest = decode(bytes)?;
            convert(&r, r.coordinator >= 0, |o| if let Outgoing::Alive(r) = o { Some(r) } else { None });
            reply(node.alive(Request::new(r)).await);
        }
        3 => {
            let r: pb::RingElectionRequest = decode(bytes)?;
            let valid = r.initiator > 0 && r.ids.len() <= MAX_MEMBERS && r.ids.iter().all(|&id| id > 0);
            convert(&r, valid, |o| if let Outgoing::RingElection(r) = o { Some(r) } else { None });
            reply(node.ring_election(Request::new(r)).await);
        }
        4 => {
            let r: pb::RingCoordinatorRequest = decode(bytes)?;
            convert(&r, r.coordinator > 0 && r.initiator > 0, |o| if let Outgoing::RingCoordinator(r) = o { Some(r) } else { None });
            reply(node.ring_coordinator(Request::new(r)).await);
        }
        5 => {
            let r: pb::GetStateRequest = decode(bytes)?;
            let state = answered(node.get_state(Request::new(r)).await).expect("GetState always answers");
            assert_eq!(state.id, NODE as i64);
        }
        6 => {
            let r: pb::WatchLeaderRequest = decode(bytes)?;
            let _ = answered(node.watch_leader(Request::new(r)).await);
        }
        7 => {
            let r: pb::WatchMessagesRequest = decode(bytes)?;
            let _ = answered(node.watch_messages(Request::new(r)).await);
        }
        _ => {
            let r: pb::FollowRequest = decode(bytes)?;
            let valid = GROUP.contains(&(r.from.max(0) as NodeId)) && r.from != NODE as i64 && (r.to == 0 || r.to == NODE as i64);
            let accepted = answered(node.follow(Request::new(r)).await).is_some();
            assert_eq!(accepted, valid, "Follow accepted or refused wrongly");
        }
    }
    Some(())
}

async fn berkeley(kind: u8, knobs: u8, bytes: &[u8]) -> Option<()> {
    match kind {
        0..=2 => {
            let config = MasterConfig {
                interval: Duration::from_secs(5),
                tolerance_nanos: 1e9,
                samples: 1,
                timeout: Duration::from_millis(100),
                max_missed: 2,
                max_members: 2,
                dialer: Dialer::plaintext(),
            };
            let master = Master::new(clock("master"), config);
            let (_stop_handle, stop) = Stop::new();
            let service = MasterService::new(master, "master", Watchers::new(2), stop);
            match kind {
                0 => {
                    let r: RegisterRequest = decode(bytes)?;
                    let valid = check_name(&r.name).is_ok()
                        && check_address(&r.address).is_ok()
                        && (MIN_CLAIM_LEN..=MAX_CLAIM_LEN).contains(&r.claim.len());
                    let first = answered(service.register(Request::new(r.clone())).await);
                    if !valid {
                        assert!(first.is_none(), "{r:?} registered");
                        return Some(());
                    }
                    // A valid name and address may still be undialable; once registered, the same
                    // claim registers again, and another claim cannot take a live member's name.
                    if let Some(first) = first {
                        assert!(!first.rejoined);
                        let again = answered(service.register(Request::new(r.clone())).await).expect("the same slave registers again");
                        assert!(again.rejoined);
                    }
                }
                1 => {
                    let r: StatusRequest = decode(bytes)?;
                    assert!(answered(service.status(Request::new(r)).await).is_some());
                }
                _ => {
                    let r: WatchRoundsRequest = decode(bytes)?;
                    let _ = answered(service.watch_rounds(Request::new(r)).await);
                }
            }
        }
        _ => {
            let mut r: AdjustRequest = decode(bytes)?;
            let max = [0, 1_000_000_000, i64::MAX, i64::MIN, -5][usize::from(knobs >> 4) % 5];
            let slave = Slave::new(clock("slave"), max, Dialer::plaintext()).expect("randomness");
            if knobs & 2 != 0 {
                slave.registered(r.epoch ^ u64::from(knobs & 4 != 0));
            }
            if knobs & 8 != 0 {
                r.claim = slave.claim();
            }
            let result = slave.adjust(&r);
            let from_master = r.claim == slave.claim() && knobs & 2 != 0 && knobs & 4 == 0;
            match &result {
                Ok(answer) => {
                    assert!(from_master && r.round > 0, "adjustment applied: {r:?}");
                    assert!(r.adjustment_nanos.unsigned_abs() <= max.unsigned_abs());
                    assert!(answer.frequency_correction_ppm.is_finite());
                    // Each round once.
                    assert!(matches!(slave.adjust(&r), Err(AdjustError::Replayed { .. })));
                }
                Err(AdjustError::NotFromMaster) => assert_ne!(r.claim, slave.claim()),
                Err(AdjustError::NotRegistered) => assert!(knobs & 2 == 0),
                Err(AdjustError::OtherEpoch { .. }) => assert!(knobs & 4 != 0),
                Err(AdjustError::Replayed { round, last }) => assert!(round <= last),
                Err(AdjustError::TooLarge { .. }) => assert!(r.adjustment_nanos.unsigned_abs() > max.unsigned_abs()),
                Err(AdjustError::Clock(_)) => {}
            }
            if let Err(e) = result {
                refused(&Status::from(e));
            }
        }
    }
    Some(())
}

async fn clock_and_time(kind: u8, knobs: u8, bytes: &[u8]) -> Option<()> {
    let set = clocks(knobs & 1 != 0);
    match kind {
        0 => {
            let r: ReadRequest = decode(bytes)?;
            let found = set.get(&r.clock).is_ok();
            let read = answered(ClockService::new(set).read(Request::new(r.clone())).await);
            assert_eq!(read.is_some(), found);
            if let Some(read) = read {
                assert!(r.clock.is_empty() || read.clock == r.clock);
            }
        }
        1 => {
            let r: GetTimeRequest = decode(bytes)?;
            let sent = r.client_send_time;
            let server = TimeServer::new(set.clocks()[0].clone(), 0);
            if let Some(answer) = answered(server.get_time(Request::new(r)).await) {
                assert_eq!(answer.origin_time, sent, "the origin is echoed as sent");
                assert!(answer.receive_time.is_some() && answer.transmit_time.is_some());
            } else {
                assert!(sent.is_some(), "a request without a send time refused");
            }
        }
        2 => {
            let r: GetTimeStringRequest = decode(bytes)?;
            let server = TimeServer::new(set.clocks()[0].clone(), 0);
            let answer = answered(server.get_time_string(Request::new(r)).await).expect("always answers");
            assert!(!answer.time.is_empty());
        }
        _ => {
            let lab = LabService::new(set, Some(Arc::new(LinkFaults::default())));
            match kind {
                3 => {
                    let r: BumpClockRequest = decode(bytes)?;
                    let _ = answered(lab.bump_clock(Request::new(r)).await);
                }
                4 => {
                    let r: SetDriftRequest = decode(bytes)?;
                    let _ = answered(lab.set_drift(Request::new(r)).await);
                }
                5 => {
                    let r: StrobeRequest = decode(bytes)?;
                    let _ = answered(lab.strobe(Request::new(r)).await);
                }
                _ => {
                    let r: SetLinksRequest = decode(bytes)?;
                    let n = r.links.len();
                    if let Some(answer) = answered(lab.set_links(Request::new(r)).await) {
                        assert!(answer.faulty as usize <= n);
                    }
                }
            }
        }
    }
    Some(())
}

/// An NTP datagram, as the time server's NTP endpoint gets it: the header and what follows it walked
/// strictly (RFC 7822's extension fields, then a MAC), and the server's logic answering it. Checked:
/// nothing panics; what is accepted is covered exactly by its fields and MAC, each field at least 16
/// bytes and whole words; a datagram with a bad tail is dropped; an answer is a 48-byte header
/// (never larger than the request: no amplification). `knobs` sets the rate limit's leak.
fn ntp(knobs: u8, datagram: &[u8]) -> Option<()> {
    use synclab_core::ntp::{HEADER_LEN, MIN_EXTENSION_LEN, Packet, Server, ServerConfig, extensions};
    let tail = datagram.get(HEADER_LEN..);
    let walked = tail.map(extensions);
    if let Some(Ok(ext)) = &walked {
        let covered: usize = ext.fields.iter().map(|f| f.value.len() + 4).sum::<usize>() + ext.mac.map_or(0, <[u8]>::len);
        assert_eq!(Some(covered), tail.map(<[u8]>::len), "the walk covers the tail exactly");
        assert!(ext.fields.iter().all(|f| f.value.len() + 4 >= MIN_EXTENSION_LEN && f.value.len() % 4 == 0));
    }
    let parsed = Packet::parse(datagram);
    if matches!(walked, Some(Err(_))) {
        assert!(parsed.is_err(), "a datagram whose tail does not walk is refused");
    }
    let mut server = Server::new(ServerConfig { rate_per_sec: 1, burst: 1, leak: knobs % 4, ..ServerConfig::default() }, (1, 2));
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    for i in 0..3 {
        if let Ok(mut reply) = server.respond(datagram, client, 1_700_000_000_000_000_000 + i) {
            assert!(parsed.is_ok(), "only a datagram that parses is answered");
            let bytes = reply.stamp_transmit(1_700_000_000_000_000_000 + i);
            assert!(bytes.len() <= datagram.len(), "no amplification");
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let [which, knobs, bytes @ ..] = data else { return };
    // With I/O: a handler may make the node dial a peer (to send what its machine decided) before the
    // input's work ends; without an I/O driver that dial would panic inside tokio, not in synclab.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    // Election (9 types), Berkeley (4), clock, time and lab (7), and an NTP datagram: 21 request types.
    let which = which % 21;
    runtime.block_on(async {
        match which {
            0..=8 => election(which, *knobs, bytes).await,
            9..=12 => berkeley(which - 9, *knobs, bytes).await,
            20 => ntp(*knobs, bytes),
            _ => clock_and_time(which - 13, *knobs, bytes).await,
        }
    });
});
