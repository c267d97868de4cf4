//! The election machines' behaviour through [`super::Machine`]: timings, withdrawal, minted terms, who
//! counts as down, and configs.

use super::*;

#[test]
fn terms_are_owned_by_one_node_each() {
    let members = [2, 5, 9];
    for term in 0..30 {
        let owner = owner(&members, term);
        assert_eq!(Some(members[(term % 3) as usize]), owner);
    }
    // Rounds of three terms: 0–2, 3–5, 6–8, ...; a claim lands in the round after the last term seen.
    for (id, after, want) in [(2, 0, 3), (5, 0, 4), (9, 0, 5), (9, 2, 5), (2, 3, 6), (5, 4, 7), (9, 5, 8), (5, 6, 10)] {
        let term = next_owned_term(&members, id, after).unwrap();
        assert_eq!(term, want, "next term of {id} after {after}");
        assert_eq!(owner(&members, term), Some(id));
    }
    assert_eq!(next_owned_term(&members, 7, 0), None, "not a member");
    assert_eq!(next_owned_term(&members, 9, MAX_TERM - 1), None, "past the largest term");
    assert_eq!(next_owned_term(&members, 2, u64::MAX), None, "no overflow");
}

#[test]
fn of_two_nodes_that_win_against_the_same_past_the_higher_claims_the_higher_term() {
    let members: Vec<NodeId> = (1..=100).collect();
    for after in [0, 1, 96, 97, 98, 99, 100, 896, 12_345] {
        for low in 1..100 {
            let low_term = next_owned_term(&members, low, after).unwrap();
            let high_term = next_owned_term(&members, low + 1, after).unwrap();
            assert!(low_term > after && high_term > low_term, "after {after}: node {low} claims {low_term}, node {} {high_term}", low + 1);
        }
    }
}

/// Node `id` (1 or 2) settled as a follower of node 3 (term 2, owned by node 3 in a group of three), at
/// `at`.
fn follower_of_3(algorithm: Algorithm, id: NodeId, at: Duration) -> Machine {
    let hb = Duration::from_millis(50);
    let mut m = Machine::new(algorithm, GroupConfig::new(id, [1, 2, 3], hb, hb * 4).unwrap(), 0);
    let announcement = match algorithm {
        Algorithm::Bully => Message::Coordinator { term: 2 },
        Algorithm::Ring => Message::RingCoordinator { term: 2, coordinator: 3, initiator: 3 },
    };
    m.on_request(at, 3, announcement).unwrap();
    assert_eq!((m.core().role(), m.core().coordinator()), (Role::Follower, Some(3)));
    m.drain();
    m
}

fn alives_to(m: &mut Machine, to: NodeId) -> usize {
    m.drain().iter().filter(|e| e.to == to && matches!(e.message, Message::Alive { .. })).count()
}

/// The coordinator's heartbeats tell a follower all its own would (the coordinator lives, and its
/// term): while they arrive the follower sends none, which halves a group's heartbeats. Once they
/// stop for one and a half heartbeats it asks the coordinator itself, and a coordinator that
/// answers keeps it: a follower whose coordinator cannot reach it is not left to suspect it.
#[test]
fn a_follower_asks_its_coordinator_only_when_the_coordinators_heartbeats_stop() {
    let ms = Duration::from_millis;
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let mut m = follower_of_3(algorithm, 1, ms(1000));
        // Heartbeats from node 3 every 50 ms for a second: the follower sends no Alive.
        let mut sent = 0;
        for i in 1..=20u64 {
            m.on_request(ms(1000 + 50 * i), 3, Message::Alive { term: 2, coordinator: Some(3) }).unwrap();
            for t in (1..50).step_by(7) {
                m.tick(ms(1000 + 50 * i + t));
                sent += alives_to(&mut m, 3);
            }
        }
        assert_eq!(sent, 0, "{algorithm}: a follower that hears its coordinator sends no Alive");
        // Node 3's heartbeats stop (last heard at 2000 ms): the follower asks by 2075 ms + a tick.
        let mut asked = None;
        for t in (2001..2150).step_by(5) {
            m.tick(ms(t));
            if alives_to(&mut m, 3) > 0 {
                asked = Some(t);
                break;
            }
        }
        let asked = asked.unwrap_or_else(|| panic!("{algorithm}: the follower never asked its silent coordinator"));
        assert!((2075..=2130).contains(&asked), "{algorithm}: asked at {asked} ms");
        // Node 3 answers: still its follower, and no election at the timeout (2200 ms).
        let envelope = Envelope { to: 3, message: Message::Alive { term: 2, coordinator: Some(3) }, tag: 0 };
        m.on_reply(ms(asked + 1), envelope, Ok(Reply { term: 2, coordinator: Some(3), ok: true }));
        for t in (asked + 2..2260).step_by(5) {
            m.tick(ms(t));
            m.drain();
        }
        assert_eq!((m.core().role(), m.core().coordinator()), (Role::Follower, Some(3)), "{algorithm}");
    }
}

/// With the adaptive detector, a follower whose coordinator's heartbeats arrive with jitter holds no
/// election; once they stop, it asks the coordinator at one and a half heartbeats and, unanswered,
/// suspects it at the detector's floor, well before the fixed timeout would (200 ms); a follower
/// on the fixed timeout waits the whole timeout.
#[test]
fn an_adaptive_follower_suspects_a_silent_coordinator_at_its_floor_and_a_jittery_one_never() {
    let ms = Duration::from_millis;
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        for adaptive in [true, false] {
            let hb = ms(50);
            let config = GroupConfig::new(1, [1, 2, 3], hb, hb * 4).unwrap();
            let config = if adaptive { config.adaptive() } else { config };
            let mut m = Machine::new(algorithm, config, 0);
            let announcement = match algorithm {
                Algorithm::Bully => Message::Coordinator { term: 2 },
                Algorithm::Ring => Message::RingCoordinator { term: 2, coordinator: 3, initiator: 3 },
            };
            m.on_request(ms(1000), 3, announcement).unwrap();
            m.drain();
            // 200 heartbeats, each up to 9 ms late: the follower stays.
            let mut last = 1000;
            for i in 1..=200u64 {
                let at = 1000 + 50 * i + (i * 7919) % 10;
                for t in last + 1..at {
                    m.tick(ms(t));
                }
                m.on_request(ms(at), 3, Message::Alive { term: 2, coordinator: Some(3) }).unwrap();
                m.drain();
                last = at;
            }
            assert_eq!(m.core().last_election().map(|e| e.reason.as_str()), None, "{algorithm} adaptive {adaptive}: no election");
            // The heartbeats stop: the follower asks at 75 ms, and suspects its coordinator when the
            // detector says.
            let mut suspected = None;
            for t in last + 1..last + 400 {
                m.tick(ms(t));
                m.drain();
                if m.core().last_election().is_some() {
                    suspected = Some(t - last);
                    break;
                }
            }
            let after = suspected.unwrap_or_else(|| panic!("{algorithm}: never suspected"));
            if adaptive {
                assert_eq!(after, 110, "{algorithm}: at the adaptive floor (2.2 heartbeats)");
            } else {
                assert_eq!(after, 200, "{algorithm}: at the fixed timeout");
            }
        }
    }
}

/// A Bully candidate asks the highest node first, and its first OK withdraws the `Election`s still
/// unanswered: their answers cannot change its part (it waits for an announcement now), so a shell
/// may cancel them. A candidate that then follows withdraws nothing more, and nothing twice.
#[test]
fn a_bully_candidate_asks_the_highest_first_and_its_first_ok_withdraws_the_rest() {
    let ms = Duration::from_millis;
    let hb = ms(50);
    let mut m = Machine::new(Algorithm::Bully, GroupConfig::new(1, 1..=5, hb, hb * 4).unwrap(), 0);
    m.hold_election(ms(10), "test");
    let ready = m.ready();
    let sent = ready.messages;
    let to: Vec<NodeId> = sent.iter().map(|e| e.to).collect();
    assert_eq!(to, vec![5, 4, 3, 2], "highest first");
    assert!(ready.withdrawn.is_empty(), "nothing withdrawn while no answer came");
    // Node 3 answers first.
    let from_3 = sent.iter().find(|e| e.to == 3).unwrap().clone();
    m.on_reply(ms(11), from_3.clone(), Ok(Reply { term: 0, coordinator: None, ok: true }));
    assert_eq!(m.core().role(), Role::Waiting);
    let mut withdrawn = m.ready().withdrawn;
    withdrawn.sort_unstable();
    let mut others: Vec<u64> = sent.iter().filter(|e| e.to != 3).map(|e| e.tag).collect();
    others.sort_unstable();
    // The answered one may be among them (withdrawing it is harmless); the other three must be.
    assert!(others.iter().all(|t| withdrawn.contains(t)), "withdrawn {withdrawn:?}, expected {others:?}");
    // A late OK from node 5 and the announcement change nothing of that.
    let from_5 = sent.iter().find(|e| e.to == 5).unwrap().clone();
    m.on_reply(ms(12), from_5, Ok(Reply { term: 0, coordinator: None, ok: true }));
    m.on_request(ms(13), 5, Message::Coordinator { term: 4 }).unwrap();
    assert_eq!((m.core().role(), m.core().coordinator()), (Role::Follower, Some(5)));
    assert!(m.ready().withdrawn.is_empty(), "nothing withdrawn twice");
}

/// The term a node must store before its messages leave is the one it minted (a win), not one it
/// learned from a message: the group knows a learned term already.
#[test]
fn a_won_term_is_minted_and_a_learned_one_is_not() {
    let ms = Duration::from_millis;
    let hb = ms(50);
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let m = follower_of_3(algorithm, 1, ms(1000));
        assert_eq!((m.core().term(), m.core().minted()), (2, 0), "{algorithm}: term 2 learned from node 3");
        let mut top = Machine::new(algorithm, GroupConfig::new(3, [1, 2, 3], hb, hb * 4).unwrap(), 7);
        top.hold_election(ms(10), "test");
        if algorithm == Algorithm::Ring {
            // The lap comes back with every id on it; node 3 completes it.
            let lap = top.drain().into_iter().find(|e| matches!(e.message, Message::RingElection { .. })).unwrap();
            if let Message::RingElection { term, .. } = lap.message {
                top.on_request(ms(11), 2, Message::RingElection { term, initiator: 3, ids: vec![3, 1, 2] }).unwrap();
            }
        }
        assert_eq!(top.core().role(), Role::Coordinator, "{algorithm}");
        assert!(
            top.core().term() > 7 && top.core().minted() == top.core().term(),
            "{algorithm}: term {} minted {}",
            top.core().term(),
            top.core().minted()
        );
    }
}

fn unanswered(m: &mut Machine, now: Duration, to: NodeId, message: Message) {
    m.on_reply(now, Envelope { to, message, tag: 0 }, Err(SendError::NoAnswer("test".into())));
}

fn election_targets(m: &mut Machine, now: Duration) -> Vec<NodeId> {
    m.hold_election(now, "test");
    m.drain().iter().filter(|e| !matches!(e.message, Message::Alive { .. })).map(|e| e.to).collect()
}

/// Whether a peer is down is the machine's to judge, from the outcomes of its sends: after
/// [`MISSES_FOR_DOWN`] sends in a row that waited out their deadline a peer gets no election message
/// for [`DOWN_FOR`] (it would only wait again), unless it is heard from sooner; one answer in
/// between, if only a refusal, starts the count again. Both algorithms skip it. A refused
/// connection cost no wait and marks nothing (a node starting up refuses until it listens).
#[test]
fn a_peer_whose_sends_go_unanswered_is_skipped_until_heard_from_or_down_for_has_passed() {
    let ms = Duration::from_millis;
    let hb = ms(50);
    let alive = || Message::Alive { term: 0, coordinator: None };
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let mut m = Machine::new(algorithm, GroupConfig::new(1, 1..=3, hb, hb * 4).unwrap(), 0);
        // The peer each algorithm asks first: Bully the highest, the ring its successor.
        let skipped = if algorithm == Algorithm::Bully { 3 } else { 2 };
        assert_eq!(election_targets(&mut m, ms(0)).first(), Some(&skipped), "{algorithm}");
        // One miss, an answer (a refusal), one miss: not two in a row.
        unanswered(&mut m, ms(10), skipped, alive());
        m.on_reply(ms(11), Envelope { to: skipped, message: alive(), tag: 0 }, Err(SendError::Refused("test".into())));
        unanswered(&mut m, ms(12), skipped, alive());
        assert!(!m.core().is_down(skipped, ms(13)), "{algorithm}: an answer in between resets the count");
        assert!(election_targets(&mut m, ms(13)).contains(&skipped));
        // Refused connections, however many, mark nothing.
        for t in 14..18 {
            m.on_reply(ms(t), Envelope { to: skipped, message: alive(), tag: 0 }, Err(SendError::Unreachable("refused".into())));
        }
        assert!(!m.core().is_down(skipped, ms(18)), "{algorithm}: a refusing peer is not down");
        // Two in a row: down for DOWN_FOR.
        unanswered(&mut m, ms(20), skipped, alive());
        assert!(m.core().is_down(skipped, ms(20)), "{algorithm}");
        let to = election_targets(&mut m, ms(30));
        assert!(!to.contains(&skipped), "{algorithm}: sent {to:?} to a peer found down");
        if algorithm == Algorithm::Ring {
            assert_eq!(to, vec![3], "the ring passes it by");
        }
        assert!(!m.core().is_down(skipped, ms(20) + DOWN_FOR), "{algorithm}");
        assert!(election_targets(&mut m, ms(20) + DOWN_FOR).contains(&skipped), "{algorithm}: asked again after DOWN_FOR");
        // Down again, then a message from it: asked again at once.
        unanswered(&mut m, ms(2000), skipped, alive());
        unanswered(&mut m, ms(2001), skipped, alive());
        assert!(m.core().is_down(skipped, ms(2002)));
        m.on_request(ms(2003), skipped, Message::Alive { term: 0, coordinator: None }).unwrap();
        m.drain();
        assert!(!m.core().is_down(skipped, ms(2004)), "{algorithm}: heard from");
    }
}

/// A coordinator whose line broke unanswered, or that said goodbye, is down for the elections that
/// follow even when this node had already moved on to another coordinator; a Bully winner does not
/// announce itself to a node found down (the heartbeats tell it once it answers).
#[test]
fn a_lost_coordinator_is_down_even_for_a_node_that_follows_another_now() {
    let ms = Duration::from_millis;
    let hb = ms(50);
    // Node 2 of 1..=4 follows node 4 (term 3, owned by node 4).
    let mut m = Machine::new(Algorithm::Bully, GroupConfig::new(2, 1..=4, hb, hb * 4).unwrap(), 0);
    m.on_request(ms(0), 4, Message::Coordinator { term: 3 }).unwrap();
    m.drain();
    // Node 3's old line reports it gone: node 2 does not follow node 3, so no election, but 3 is down.
    m.coordinator_lost(ms(5), 3, "said goodbye");
    assert_eq!((m.core().role(), m.core().coordinator()), (Role::Follower, Some(4)));
    assert!(m.core().is_down(3, ms(6)));
    // Node 4 dies (its line breaks unanswered): node 2 asks neither 3 nor 4, wins, and tells only 1.
    m.coordinator_lost(ms(10), 4, "lost its connection");
    assert_eq!(m.core().role(), Role::Coordinator);
    let sent: Vec<(NodeId, Kind)> = m.drain().iter().map(|e| (e.to, e.message.kind())).collect();
    assert_eq!(sent, vec![(1, Kind::Coordinator)]);
    // Node 3 comes back and speaks: elections reach it again at once.
    let term = m.core().term();
    m.on_request(ms(20), 3, Message::Alive { term, coordinator: Some(2) }).unwrap();
    assert!(!m.core().is_down(3, ms(21)));
}

/// A Bully node that suspected a coordinator which lives (a busy one, late with its heartbeats) and
/// is still holding its election, or waits for the announcement of a higher node that answered OK,
/// follows that coordinator at its next heartbeat: the owner of the node's own term says it rules
/// it, as its `Coordinator` would. Without that it waited out the election timeout and then held
/// another election, drawing the nodes above it in (a ~650 ms failover at n = 100). A candidate
/// bullying a lower coordinator does not give way to that coordinator's heartbeats, and nobody
/// follows a node that names another coordinator.
#[test]
fn a_bully_node_that_suspected_a_live_coordinator_follows_it_at_its_next_heartbeat() {
    let ms = Duration::from_millis;
    let hb = ms(50);
    let alive = |term, c| Message::Alive { term, coordinator: Some(c) };
    for answered in [false, true] {
        // Node 1 of 1..=4 follows node 4 (term 3), whose heartbeats stop for the timeout.
        let mut m = Machine::new(Algorithm::Bully, GroupConfig::new(1, 1..=4, hb, hb * 4).unwrap(), 0);
        m.on_request(ms(0), 4, Message::Coordinator { term: 3 }).unwrap();
        m.drain();
        for t in (5..=250).step_by(5) {
            m.tick(ms(t));
        }
        assert_eq!(m.core().role(), Role::Candidate);
        let elections: Vec<Envelope> = m.drain().into_iter().filter(|e| e.message.kind() == Kind::Election).collect();
        assert_eq!(elections.iter().map(|e| e.to).collect::<Vec<_>>(), vec![3, 2], "the suspected coordinator is not asked");
        if answered {
            m.on_reply(ms(255), elections[0].clone(), Ok(Reply { term: 3, coordinator: Some(4), ok: true }));
            assert_eq!(m.core().role(), Role::Waiting);
        }
        // Another node's heartbeat, or one naming another coordinator, changes nothing.
        m.on_request(ms(258), 3, alive(3, 4)).unwrap();
        assert_ne!(m.core().role(), Role::Follower, "answered {answered}: node 3 is not the coordinator");
        // Node 4's next heartbeat: node 1 follows it, and holds no election past the election timeout.
        m.on_request(ms(260), 4, alive(3, 4)).unwrap();
        assert_eq!((m.core().role(), m.core().coordinator(), m.core().term()), (Role::Follower, Some(4), 3), "answered {answered}");
        assert!(!m.core().is_down(4, ms(261)));
        m.drain();
        for t in (265..=1000).step_by(5) {
            if t % 50 == 10 {
                m.on_request(ms(t), 4, alive(3, 4)).unwrap();
            }
            m.tick(ms(t));
            let sent: Vec<Kind> = m.drain().iter().map(|e| e.message.kind()).collect();
            assert!(!sent.contains(&Kind::Election), "answered {answered}: an election at {t} ms");
        }
        assert_eq!((m.core().role(), m.core().coordinator()), (Role::Follower, Some(4)));
    }
    // Node 3 of 1..=4 hears from node 2, the owner of term 1: Bully's rule has it take over, and node
    // 2's heartbeats do not make it follow node 2 again.
    let mut m = Machine::new(Algorithm::Bully, GroupConfig::new(3, 1..=4, hb, hb * 4).unwrap(), 0);
    m.on_request(ms(0), 2, Message::Coordinator { term: 1 }).unwrap();
    assert_eq!(m.core().role(), Role::Candidate);
    m.on_request(ms(10), 2, alive(1, 2)).unwrap();
    assert_eq!(m.core().role(), Role::Candidate, "a lower coordinator's heartbeat");
}

/// A ring follower drawn into a lap that elects the coordinator it already follows (a lap started
/// late, after another had settled the group) ends its election record when the announcement comes:
/// the next election, on the coordinator's death, is recorded from its own start (the dashboard and
/// `GetState` show it, and the failover benchmark splits on it).
#[test]
fn a_ring_lap_that_elects_the_coordinator_already_followed_ends_the_election_record() {
    let ms = Duration::from_millis;
    let mut m = follower_of_3(Algorithm::Ring, 1, ms(1000));
    m.on_request(ms(1010), 2, Message::RingElection { term: 2, initiator: 2, ids: vec![2] }).unwrap();
    assert_eq!(m.core().last_election().map(|e| (e.started, e.finished)), Some((ms(1010), None)));
    m.on_request(ms(1020), 2, Message::RingCoordinator { term: 5, coordinator: 3, initiator: 2 }).unwrap();
    assert_eq!((m.core().role(), m.core().coordinator(), m.core().term()), (Role::Follower, Some(3), 5));
    assert_eq!(m.core().last_election().and_then(|e| e.finished), Some(ms(1020)), "the lap's outcome is known");
    m.coordinator_lost(ms(2000), 3, "lost its connection");
    assert_eq!(m.core().last_election().map(|e| e.started), Some(ms(2000)), "a new election, recorded from its start");
}

/// A ring follower drawn into another node's lap passes it past its own coordinator when it too has
/// missed two heartbeats (a paused coordinator would only make the lap wait out a send deadline), and to
/// it when it heard from it more recently (one node's false suspicion does not spread), or when the
/// coordinator is already on the lap.
#[test]
fn a_ring_follower_skips_a_coordinator_it_too_has_not_heard_from() {
    let ms = Duration::from_millis;
    // Node 2 follows node 3 (its successor), last heard at 1000 ms.
    let follower = || follower_of_3(Algorithm::Ring, 2, ms(1000));
    let lap_to = |m: &mut Machine| -> Vec<NodeId> {
        m.drain().iter().filter(|e| matches!(e.message, Message::RingElection { .. })).map(|e| e.to).collect()
    };
    let mut heard = follower();
    heard.on_request(ms(1090), 1, Message::RingElection { term: 2, initiator: 1, ids: vec![1] }).unwrap();
    assert_eq!(lap_to(&mut heard), vec![3], "heard from 3 90 ms ago: the lap goes to it");
    let mut quiet = follower();
    quiet.on_request(ms(1100), 1, Message::RingElection { term: 2, initiator: 1, ids: vec![1] }).unwrap();
    assert_eq!(lap_to(&mut quiet), vec![1], "3 quiet for two heartbeats here too: the lap skips it");
    let mut on_lap = follower();
    on_lap.on_request(ms(1120), 3, Message::RingElection { term: 2, initiator: 1, ids: vec![1, 3] }).unwrap();
    assert_eq!(lap_to(&mut on_lap), vec![3], "3 is on the lap, so alive: not skipped");
    // A word from 3 ends the suspicion.
    quiet.on_request(ms(1110), 3, Message::Alive { term: 2, coordinator: Some(3) }).unwrap();
    assert!(!quiet.core().is_down(3, ms(1110)));
}

/// The same second opinion in the Bully: a follower that gets a lower node's `Election` when it too has
/// missed two of its coordinator's heartbeats asks only the other higher nodes (here none: it wins at
/// once); one that heard from it more recently asks it.
#[test]
fn a_bully_follower_skips_a_coordinator_it_too_has_not_heard_from() {
    let ms = Duration::from_millis;
    // Node 2 follows node 3, last heard at 1000 ms.
    let follower = || follower_of_3(Algorithm::Bully, 2, ms(1000));
    let mut heard = follower();
    heard.on_request(ms(1090), 1, Message::Election { term: 2 }).unwrap();
    let sent: Vec<(NodeId, &'static str)> = heard.drain().iter().map(|e| (e.to, e.message.kind().as_str())).collect();
    assert!(sent.contains(&(3, "Election")), "heard from 3 90 ms ago: asks it ({sent:?})");
    assert_eq!(heard.core().role(), Role::Candidate);
    let mut quiet = follower();
    quiet.on_request(ms(1100), 1, Message::Election { term: 2 }).unwrap();
    let sent: Vec<(NodeId, &'static str)> = quiet.drain().iter().map(|e| (e.to, e.message.kind().as_str())).collect();
    assert!(!sent.iter().any(|&(to, _)| to == 3), "3 quiet for two heartbeats here too: not asked ({sent:?})");
    assert_eq!((quiet.core().role(), quiet.core().coordinator()), (Role::Coordinator, Some(2)), "no higher node left: it won");
}

#[test]
fn configs_are_checked() {
    let hb = Duration::from_millis(50);
    let to = Duration::from_millis(200);
    assert_eq!(GroupConfig::new(0, [0, 1], hb, to), Err(ConfigError::ZeroId));
    assert_eq!(GroupConfig::new(1, [1, 2, 2], hb, to), Err(ConfigError::Duplicate(2)));
    assert_eq!(GroupConfig::new(3, [1, 2], hb, to), Err(ConfigError::NotMember(3)));
    assert!(matches!(GroupConfig::new(1, [1, 2], to, to), Err(ConfigError::HeartbeatNotBelowTimeout { .. })));
    assert_eq!(GroupConfig::new(2, [2, 1], hb, to).unwrap().members, vec![1, 2]);
}

/// Reply terms are bounded as request terms are: a reply more than `MAX_TERM_JUMP` above the node's term
/// (a forged one near `MAX_TERM`, say) counts as a refusal and raises the node's term by the jump only,
/// so it can still claim terms; one beyond `MAX_TERM` moves nothing; one within the jump is learned.
#[test]
fn reply_terms_are_bounded_as_request_terms_are() {
    let ms = Duration::from_millis;
    for algorithm in [Algorithm::Bully, Algorithm::Ring] {
        let mut m = Machine::new(algorithm, GroupConfig::new(1, [1, 2, 3], ms(50), ms(200)).unwrap(), 10);
        m.hold_election(ms(0), "test");
        let sent = m.drain();
        let envelope = sent.first().cloned().unwrap_or_else(|| panic!("{algorithm}: an election sends"));
        let failed_before = m.core().counters()[&envelope.message.kind()].failed;
        m.on_reply(ms(1), envelope.clone(), Ok(Reply { term: MAX_TERM - 1, coordinator: None, ok: true }));
        assert_eq!(m.core().term(), 10 + MAX_TERM_JUMP, "{algorithm}: one jump, not to the maximum");
        assert_eq!(m.core().counters()[&envelope.message.kind()].failed, failed_before + 1, "{algorithm}: counted as a refusal");
        let term = m.core().term();
        m.on_reply(ms(2), envelope.clone(), Ok(Reply { term: MAX_TERM + 1, coordinator: None, ok: true }));
        assert_eq!(m.core().term(), term, "{algorithm}: beyond the largest term moves nothing");
        m.on_reply(ms(3), envelope, Ok(Reply { term: term + 5, coordinator: None, ok: false }));
        assert_eq!(m.core().term(), term + 5, "{algorithm}: within the jump the term is learned");
        assert!(next_owned_term(m.core().config().members.as_slice(), 1, m.core().term()).is_some(), "{algorithm}: still terms to claim");
    }
}
