//! Real election nodes in one process on loopback: failover when the coordinator stops, takeover when
//! it returns, a frozen coordinator stepping down, terms that only grow, and bad messages refused.

use std::collections::BTreeMap;
use std::time::Duration;

use synclab::proto::election as pb;
use synclab::proto::election::election_service_client::ElectionServiceClient;
use synclab_core::election::{Algorithm, NodeId};
use synclab_harness::cluster::LocalCluster;

const LIMIT: Duration = Duration::from_secs(5);

async fn cluster(algorithm: Algorithm, n: u64, dir: &str) -> LocalCluster {
    let state_dir = std::env::temp_dir().join(format!("synclab-election-{}-{dir}-{algorithm}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let ms = Duration::from_millis;
    LocalCluster::start(algorithm, n, ms(50), ms(200), ms(100), state_dir).await.expect("cluster starts")
}

/// Terms each node has reported, to check they never go back, and coordinators per term.
#[derive(Default)]
struct Observer {
    last_term: BTreeMap<i64, u64>,
    rulers: BTreeMap<u64, i64>,
}

impl Observer {
    async fn look(&mut self, cluster: &LocalCluster) {
        for (_, s) in cluster.states().await {
            let last = self.last_term.entry(s.id).or_default();
            assert!(s.term >= *last, "node {}'s term went back from {last} to {}", s.id, s.term);
            *last = s.term;
            if s.role == pb::Role::Coordinator as i32 {
                let ruler = *self.rulers.entry(s.term).or_insert(s.id);
                assert_eq!(ruler, s.id, "two coordinators in term {}", s.term);
            }
        }
    }

    async fn watch_for(&mut self, cluster: &LocalCluster, span: Duration) {
        let end = tokio::time::Instant::now() + span;
        while tokio::time::Instant::now() < end {
            self.look(cluster).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn agree(cluster: &LocalCluster, observer: &mut Observer, ids: &[NodeId], coordinator: NodeId) -> u64 {
    let term = cluster.wait_for_agreement(ids, coordinator, LIMIT).await;
    observer.look(cluster).await;
    match term {
        Some(term) => term,
        None => panic!("{ids:?} never agreed on {coordinator}: {:?}", summary(cluster).await),
    }
}

async fn summary(cluster: &LocalCluster) -> Vec<(i64, i32, u64, i64)> {
    cluster.states().await.values().map(|s| (s.id, s.role, s.term, s.coordinator)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_takeover() {
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let mut cluster = cluster(algorithm, 5, "failover").await;
        let mut observer = Observer::default();
        let t5 = agree(&cluster, &mut observer, &[1, 2, 3, 4, 5], 5).await;

        // The coordinator's process goes away: the rest elect node 4 in a higher term.
        cluster.stop(5).await;
        let t4 = agree(&cluster, &mut observer, &[1, 2, 3, 4], 4).await;
        assert!(t4 > t5, "{algorithm}: {t4} <= {t5}");
        observer.watch_for(&cluster, Duration::from_millis(300)).await;

        // Node 5 comes back with its saved term and takes over in a term above both.
        cluster.restart(5).await.expect("restarts");
        let t5b = agree(&cluster, &mut observer, &[1, 2, 3, 4, 5], 5).await;
        assert!(t5b > t4, "{algorithm}: {t5b} <= {t4}");
        let state = cluster.node(5).unwrap().snapshot().await;
        let election = state.last_election.expect("node 5 ran an election");
        assert_eq!(election.reason, "startup");
        assert!(election.finished.is_some());
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_coordinator_steps_down_when_it_thaws() {
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let mut cluster = cluster(algorithm, 5, "freeze").await;
        let mut observer = Observer::default();
        agree(&cluster, &mut observer, &[1, 2, 3, 4, 5], 5).await;
        cluster.stop(5).await;
        let t4 = agree(&cluster, &mut observer, &[1, 2, 3, 4], 4).await;

        // docker pause node-4: the others elect node 3.
        cluster.freeze(4, true);
        let t3 = agree(&cluster, &mut observer, &[1, 2, 3], 3).await;
        assert!(t3 > t4);
        // Node 4 still believes it rules its old term: one coordinator per term all the same.
        assert_eq!(cluster.node(4).unwrap().snapshot().await.term, t4);

        // unpause: node 4 learns the newer term, steps down, and (the highest live id) takes over.
        cluster.freeze(4, false);
        observer.watch_for(&cluster, Duration::from_millis(100)).await;
        let t4b = agree(&cluster, &mut observer, &[1, 2, 3, 4], 4).await;
        assert!(t4b > t3, "{algorithm}: {t4b} <= {t3}");
        observer.watch_for(&cluster, Duration::from_millis(300)).await;
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_coordinator_and_the_next_highest() {
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let mut cluster = cluster(algorithm, 5, "two").await;
        let mut observer = Observer::default();
        agree(&cluster, &mut observer, &[1, 2, 3, 4, 5], 5).await;
        cluster.stop(5).await;
        cluster.stop(4).await;
        agree(&cluster, &mut observer, &[1, 2, 3], 3).await;
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_leader_streams_every_change() {
    let mut cluster = cluster(Algorithm::Bully, 3, "watch").await;
    let mut observer = Observer::default();
    agree(&cluster, &mut observer, &[1, 2, 3], 3).await;
    let mut client = ElectionServiceClient::connect(format!("http://{}", cluster.address(1))).await.unwrap();
    let mut stream = client.watch_leader(pb::WatchLeaderRequest {}).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.coordinator, 3);
    cluster.stop(3).await;
    // The changes up to node 2 as the coordinator (node 1 may or may not suspect before node 2 wins).
    let mut seen = Vec::new();
    while let Ok(Ok(Some(state))) = tokio::time::timeout(LIMIT, stream.message()).await {
        seen.push((state.role, state.coordinator));
        if state.coordinator == 2 && state.role == pb::Role::Follower as i32 {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&(pb::Role::Follower as i32, 2)), "{seen:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_a_clear_error_and_change_nothing() {
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let cluster = cluster(algorithm, 3, "bad").await;
        let mut observer = Observer::default();
        agree(&cluster, &mut observer, &[1, 2, 3], 3).await;
        // Let the start-up messages drain, so the only messages are ours.
        observer.watch_for(&cluster, Duration::from_millis(300)).await;
        let term = agree(&cluster, &mut observer, &[1, 2, 3], 3).await;
        let mut client = ElectionServiceClient::connect(format!("http://{}", cluster.address(2))).await.unwrap();
        let before = cluster.node(2).unwrap().snapshot().await;

        let alive = |from: i64, coordinator: i64| pb::AliveRequest { from, term, coordinator, to: 0 };
        let cases: Vec<(tonic::Status, &str)> = vec![
            (client.alive(alive(-3, 3)).await.unwrap_err(), "not a node id"),
            (client.alive(alive(0, 3)).await.unwrap_err(), "not a node id"),
            (client.alive(alive(9, 3)).await.unwrap_err(), "not a member"),
            (client.alive(alive(2, 3)).await.unwrap_err(), "itself"),
            (client.alive(alive(1, 12)).await.unwrap_err(), "not a member"),
            (client.ring_election(pb::RingElectionRequest { from: 1, term, initiator: 1, ids: vec![], to: 0 }).await.unwrap_err(), ""),
        ];
        for (status, why) in cases {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(why), "{status:?}");
        }
        if algorithm == Algorithm::Ring {
            let status =
                client.ring_election(pb::RingElectionRequest { from: 1, term, initiator: 1, ids: vec![], to: 0 }).await.unwrap_err();
            assert!(status.message().contains("no ids"), "{status:?}");
            let status = client.election(pb::ElectionRequest { from: 1, term, to: 0 }).await.unwrap_err();
            assert!(status.message().contains("not a message of the ring"), "{status:?}");
        } else {
            let status = client.election(pb::ElectionRequest { from: 3, term, to: 0 }).await.unwrap_err();
            assert!(status.message().contains("go to higher ids"), "{status:?}");
        }
        // A stale announcement is answered with the current term, and refused.
        let stale = term.saturating_sub(3).max(1);
        let reply = match algorithm {
            Algorithm::Bully => {
                let owner = (stale % 3) as i64 + 1;
                client.coordinator(pb::CoordinatorRequest { from: owner, term: stale, to: 0 }).await
            }
            Algorithm::Ring => {
                let owner = (stale % 3) as i64 + 1;
                client.ring_coordinator(pb::RingCoordinatorRequest { from: 1, term: stale, coordinator: owner, initiator: 1, to: 0 }).await
            }
        };
        if let Ok(reply) = reply {
            let reply = reply.into_inner();
            assert!(!reply.ok);
            assert_eq!(reply.term, term);
        } else {
            // The stale term's owner is the receiver itself (or the wrong sender): refused outright.
            assert_eq!(reply.unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        let after = cluster.node(2).unwrap().snapshot().await;
        assert_eq!((after.term, after.coordinator, after.role), (before.term, before.coordinator, before.role));
        let rejected: u64 = after.messages.iter().map(|m| m.rejected).sum();
        assert!(rejected >= 6, "{:?}", after.messages);
        cluster.shutdown().await;
    }
}
