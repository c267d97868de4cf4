//! The contract between a state machine and its shell: the [`Ready`] each input leaves, and the rules
//! that fill it.
//!
//! After every input (a request, a reply, a tick, a start, a lost coordinator) the shell takes the
//! machine's [`Ready`] ([`super::Machine::ready`]) and carries it out in one order, as raft-rs's `Ready`
//! has it: **persist, then send, then withdraw, then publish**.
//!
//! - [`Ready::persist`]: the term the state file must hold, only when it changed. A term the node minted
//!   (it won, or completed a ring lap) is [`Persist::before_send`]: no message has revealed it yet, so
//!   it must be on disk before any message or answer leaves (a restarted node must not mint it twice). A
//!   term learned from a message may be written behind the messages (raft-rs's `must_sync` false): the
//!   group knows it already, and a group that all learn a new term at once would otherwise queue every
//!   announcement behind a hundred `fsync`s. The shell reports a finished write with
//!   [`super::Machine::persisted`]; a minted term is asked for again in every `Ready` until then.
//! - [`Ready::messages`]: what to send, none of them withdrawn in the same `Ready`.
//! - [`Ready::withdrawn`]: tags of sends handed out by earlier `Ready`s whose answers no longer matter
//!   (a Bully candidate's first OK withdraws its other `Election`s): a shell may cancel those still on
//!   their way, or let them go; an answer that comes anyway is handled like any late one.
//! - [`Ready::changed`]: what observers see that differs from the last `Ready`: role, term,
//!   coordinator, the election record.

use super::{ElectionTiming, Envelope, NodeId, Role, Term};

/// The term the state file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persist {
    /// The node's term now.
    pub term: Term,
    /// It must be stored before any of the `Ready`'s messages, or the answer to the input, leaves: the
    /// node minted it. `false`: a learned term, which may be stored behind them.
    pub before_send: bool,
}

/// What observers see that changed since the last [`Ready`] (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// The new role.
    pub role: Option<Role>,
    /// The new term.
    pub term: Option<Term>,
    /// The new coordinator (`Some(None)`: it knows none now).
    pub coordinator: Option<Option<NodeId>>,
    /// The election record, if it began or ended.
    pub election: Option<ElectionTiming>,
    /// The record is a new election (not the end of the one before).
    pub election_began: bool,
}

impl Changed {
    /// Role, term or coordinator changed: what an observer of the leadership republishes on.
    pub fn leadership(&self) -> bool {
        self.role.is_some() || self.term.is_some() || self.coordinator.is_some()
    }

    /// The reason of an election that began, if one did.
    pub fn began(&self) -> Option<&str> {
        self.election.as_ref().filter(|_| self.election_began).map(|e| e.reason.as_str())
    }
}

/// What one input left to do, in the order the shell does it: persist, send, withdraw, publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ready {
    /// The term to store, only when it rose (see [`Persist::before_send`]).
    pub persist: Option<Persist>,
    /// The messages to send, after a [`Persist::before_send`] term is stored.
    pub messages: Vec<Envelope>,
    /// Tags of sends from earlier `Ready`s whose answers no longer matter.
    pub withdrawn: Vec<u64>,
    /// What observers see that changed.
    pub changed: Changed,
}

impl Ready {
    /// Nothing to persist, send, withdraw or publish.
    pub fn is_empty(&self) -> bool {
        *self == Ready::default()
    }
}

/// What a node looks like to observers: the part of its state a [`Changed`] compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) role: Role,
    pub(crate) term: Term,
    pub(crate) coordinator: Option<NodeId>,
    pub(crate) election: Option<ElectionTiming>,
}

/// What the machine has handed out in `Ready`s so far, and what the shell reported stored.
#[derive(Debug, Clone)]
pub(crate) struct Handed {
    /// The highest term the shell reported stored ([`super::Machine::persisted`]).
    stored: Term,
    /// The highest term a `Ready` asked to store.
    requested: Term,
    /// What observers saw at the last `Ready`.
    shown: View,
}

impl Handed {
    /// A node whose state file holds `term`.
    pub(crate) fn new(term: Term) -> Self {
        Self { stored: term, requested: term, shown: View { role: Role::Follower, term, coordinator: None, election: None } }
    }

    /// The shell stored `term`.
    pub(crate) fn persisted(&mut self, term: Term) {
        self.stored = self.stored.max(term);
        self.requested = self.requested.max(term);
    }

    /// The `Ready` for a node that now looks like `now`, has minted terms up to `minted`, and queued
    /// `outbox` and `withdrawn` since the last one.
    pub(crate) fn ready(&mut self, now: View, minted: Term, outbox: Vec<Envelope>, mut withdrawn: Vec<u64>) -> Ready {
        let term = now.term;
        let persist = if minted > self.stored && term > self.stored {
            Some(Persist { term, before_send: true })
        } else if term > self.requested {
            Some(Persist { term, before_send: false })
        } else {
            None
        };
        if persist.is_some() {
            self.requested = self.requested.max(term);
        }
        // A message withdrawn in the `Ready` that would carry it is never handed out at all.
        let (messages, dropped): (Vec<Envelope>, Vec<Envelope>) = outbox.into_iter().partition(|e| !withdrawn.contains(&e.tag));
        withdrawn.retain(|tag| !dropped.iter().any(|e| e.tag == *tag));
        let was = &self.shown;
        let election = (now.election != was.election).then(|| now.election.clone()).flatten();
        let election_began = election.as_ref().is_some_and(|e| was.election.as_ref().is_none_or(|w| w.started != e.started));
        let changed = Changed {
            role: (now.role != was.role).then_some(now.role),
            term: (now.term != was.term).then_some(now.term),
            coordinator: (now.coordinator != was.coordinator).then_some(now.coordinator),
            election,
            election_began,
        };
        self.shown = now;
        Ready { persist, messages, withdrawn, changed }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::election::{Algorithm, GroupConfig, Machine, Message, Reply};

    const HB: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn machine(algorithm: Algorithm, id: NodeId, term: Term) -> Machine {
        Machine::new(algorithm, GroupConfig::new(id, [1, 2, 3], HB, HB * 4).unwrap(), term)
    }

    /// Pins: a term the node mints (a Bully win, a ring lap it completes) is in the Ready's persist
    /// part, to be stored before the announcement that reveals it; and it is asked for again until the
    /// shell reports it stored (a failed write must not let the next Ready's messages carry it unstored).
    #[test]
    fn a_minted_term_is_persisted_before_the_messages_that_reveal_it() {
        for algorithm in [Algorithm::Bully, Algorithm::Ring] {
            let mut m = machine(algorithm, 3, 7);
            m.hold_election(ms(10), "test");
            if algorithm == Algorithm::Ring {
                let lap = m.ready().messages.into_iter().find(|e| matches!(e.message, Message::RingElection { .. })).unwrap();
                let Message::RingElection { term, .. } = lap.message else { unreachable!() };
                m.on_request(ms(11), 2, Message::RingElection { term, initiator: 3, ids: vec![3, 1, 2] }).unwrap();
            }
            let ready = m.ready();
            let term = m.core().term();
            assert!(term > 7, "{algorithm}: node 3 won a new term");
            assert_eq!(ready.persist, Some(Persist { term, before_send: true }), "{algorithm}");
            assert!(ready.messages.iter().any(|e| e.message.term() == term), "{algorithm}: the announcement carries it");
            // Not reported stored: the next Ready asks again.
            m.tick(ms(12));
            assert_eq!(m.ready().persist, Some(Persist { term, before_send: true }), "{algorithm}: asked again");
            m.persisted(term);
            m.tick(ms(13));
            assert_eq!(m.ready().persist, None, "{algorithm}: stored, nothing more to persist");
        }
    }

    /// Pins: a term learned from a message is persisted too, once, and not before the messages (the
    /// node's state file is written behind them, as the shell has done since learned terms could hold a
    /// whole group's announcements back); the reply to the message that taught it carries it.
    #[test]
    fn a_learned_term_is_persisted_once_behind_the_messages() {
        let mut m = machine(Algorithm::Bully, 2, 0);
        m.ready();
        let reply = m.on_request(ms(1), 1, Message::Election { term: 7 }).unwrap();
        assert_eq!(reply, Reply { term: 7, coordinator: None, ok: true });
        let ready = m.ready();
        assert_eq!(ready.persist, Some(Persist { term: 7, before_send: false }));
        assert!(ready.messages.iter().all(|e| e.message.term() == 7), "its own Election carries the learned term");
        // Not reported stored yet: a learned term is not asked for twice.
        m.tick(ms(2));
        assert_eq!(m.ready().persist, None);
    }

    /// Pins: an input that changes nothing the state file or an observer sees leaves nothing to persist
    /// or publish.
    #[test]
    fn nothing_to_persist_or_publish_when_nothing_changed() {
        let mut m = machine(Algorithm::Bully, 3, 4);
        m.hold_election(ms(0), "test");
        let first = m.ready();
        assert!(first.changed.leadership() && first.changed.began() == Some("test"));
        m.persisted(m.core().term());
        m.tick(ms(1));
        let quiet = m.ready();
        assert_eq!((quiet.persist, quiet.changed), (None, Changed::default()));
        // A heartbeat from a follower in the same term changes nothing either.
        let term = m.core().term();
        m.on_request(ms(2), 1, Message::Alive { term, coordinator: Some(3) }).unwrap();
        assert!(m.ready().is_empty());
    }

    /// Pins: the observers' part names exactly what changed, and a restarted node's first Ready has
    /// no term to persist (its state file holds it).
    #[test]
    fn changed_names_what_observers_see_differently() {
        let mut m = machine(Algorithm::Bully, 1, 5);
        m.on_request(ms(1), 3, Message::Coordinator { term: 5 }).unwrap();
        let ready = m.ready();
        assert_eq!(ready.persist, None, "term 5 came from the state file");
        assert_eq!(ready.changed.coordinator, Some(Some(3)));
        assert_eq!((ready.changed.role, ready.changed.term), (None, None), "still a follower, still term 5");
        // Node 3 is lost: an election begins, and the record says why.
        m.coordinator_lost(ms(2), 3, "said goodbye");
        let ready = m.ready();
        assert_eq!(ready.changed.began(), Some("coordinator 3 said goodbye"));
        assert_eq!(ready.changed.role, Some(Role::Candidate));
    }

    /// Pins: the first OK withdraws the other Elections of the election, in the Ready after it; and an
    /// Election withdrawn in the Ready that would carry it is never handed out (a second election in
    /// one input replaces the first).
    #[test]
    fn withdrawn_sends_are_handed_out_once_and_never_alongside_themselves() {
        let mut m = Machine::new(Algorithm::Bully, GroupConfig::new(1, 1..=4, HB, HB * 4).unwrap(), 0);
        m.hold_election(ms(0), "first");
        m.hold_election(ms(0), "second");
        let ready = m.ready();
        assert_eq!(ready.messages.iter().map(|e| e.to).collect::<Vec<_>>(), vec![4, 3, 2], "one Election each");
        assert!(ready.withdrawn.is_empty(), "the first election's Elections were never handed out");
        let to_3 = ready.messages.iter().find(|e| e.to == 3).unwrap().clone();
        m.on_reply(ms(1), to_3, Ok(Reply { term: 0, coordinator: None, ok: true }));
        let mut withdrawn = m.ready().withdrawn;
        withdrawn.sort_unstable();
        let mut tags: Vec<u64> = ready.messages.iter().map(|e| e.tag).collect();
        tags.sort_unstable();
        assert_eq!(withdrawn, tags);
        assert!(m.ready().withdrawn.is_empty(), "nothing withdrawn twice");
    }
}
