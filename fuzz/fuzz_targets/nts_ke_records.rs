//! The NTS-KE record parser of `synclab_core::ntp::nts::ke` on arbitrary bytes (what a client sends a
//! time server's NTS-KE listener, and what a server sends a client).
//!
//! Checked: `message_len` and `parse_message` never panic and agree (a message parses only where its
//! length is found); what parses ends with End of Message and re-encodes to the same records; the
//! server's and client's readings of it never panic, and the server's response to a request it takes
//! parses and is established by a client.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synclab_core::ntp::nts::ke::{self, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Negotiated, Record};

fuzz_target!(|bytes: &[u8]| {
    for limit in [MAX_REQUEST_LEN, MAX_RESPONSE_LEN] {
        let len = ke::message_len(bytes, limit);
        let parsed = ke::parse_message(bytes, limit);
        if let Ok(records) = &parsed {
            assert_eq!(len, Ok(Some(bytes.len())), "a message parsed without its length found");
            assert_eq!(records.last(), Some(&Record::EndOfMessage));
            assert_eq!(ke::parse_message(&ke::encode(records), limit).as_ref(), Ok(records), "re-encoding changed the records");
            let _ = ke::established(records);
            if let Ok(n @ Negotiated::Ntpv4 { .. }) = ke::negotiate(records) {
                let response = ke::response(n, &vec![vec![7; 100]; 8], None, Some(123));
                let got = ke::established(&ke::parse_message(&response, MAX_RESPONSE_LEN).unwrap()).unwrap();
                assert_eq!(got.cookies.len(), 8);
            }
        }
    }
});
