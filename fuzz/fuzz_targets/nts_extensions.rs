//! The NTS extension-field checks of `synclab_core::ntp::nts::fields` (after the strict RFC 7822 walk
//! of `synclab_core::ntp::extensions`), on arbitrary datagrams and on valid requests with bits flipped.
//!
//! Checked: the server's check of a request and the client's check of a reply never panic on any
//! datagram; a valid request with any byte changed is never taken as a valid NTS request, and the
//! reply to the unchanged one is taken by the client with the cookies it asked for.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use synclab_core::ntp::nts::{Keys, MasterKeys, fields};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Any datagram, checked as a request and as a reply.
    datagram: Vec<u8>,
    /// A valid request's placeholders (0..=7) and identifier.
    placeholders: u8,
    uid: [u8; 32],
    /// Bytes of the valid request to change: (offset, xor).
    flips: Vec<(u16, u8)>,
}

fuzz_target!(|input: Input| {
    let master = MasterKeys::new(1, [5; 32], 3, 99);
    let keys = Keys { c2s: [1; 32], s2c: [2; 32] };
    let _ = fields::check_request(&input.datagram, &master);
    let _ = fields::check_reply(&input.datagram, &input.uid, &keys.s2c);

    let placeholders = usize::from(input.placeholders % 8);
    let request = fields::client_request(&[0x23; 48], &input.uid, &master.cookie(&keys), placeholders, &keys.c2s, &[4; 16]);
    let mut changed = request.clone();
    for (at, xor) in &input.flips {
        let len = changed.len();
        changed[usize::from(*at) % len] ^= xor;
    }
    let checked = fields::check_request(&changed, &master);
    if changed != request {
        assert!(!matches!(checked, Ok(Some(_))), "a changed request passed");
        return;
    }
    let got = checked.unwrap().unwrap();
    let reply = fields::NtsReply::new(&got, &master).seal(&[0x24; 48]);
    assert_eq!(fields::check_reply(&reply, &input.uid, &keys.s2c).map(|c| c.len()), Ok(placeholders + 1));
});
