//! Timestamps taken at the socket, where they mean most.
//!
//! A timestamp taken in a gRPC handler or around a client call carries the time the HTTP/2 and gRPC layers
//! spend on each side, and that time is not the same both ways. So synclab's connections watch the bytes
//! they carry: a [`frame::FrameScanner`] finds the HTTP/2 frames that end a stream (the END_STREAM flag: the
//! last frame of a request or of an answer), and the connection stamps the read that brought one in or
//! the write that sent one out. The end of a message, not its start, because a tonic client writes a
//! request's HEADERS and its DATA in two writes while an answer goes out in one: stamping the last write
//! of each makes the two directions alike.
//!
//! * Server side ([`ServerStamps`]): T2 is the read that completed the request; the real transmit time
//!   of an answer is the write that sent its end, known only after it left, so it is handed to the client
//!   in the *next* answer on the connection, as NTP's interleaved mode does.
//! * Client side ([`ClientStamps`]): T1 is the write that completed the request, T4 the read that
//!   completed the answer.
//!
//! A write is stamped just *before* the system call that makes it, a read just *after* the call that
//! returns it, so a departure is never stamped late nor an arrival early: T1 ≤ the request left ≤ it
//! arrived ≤ T2, and T3 ≤ the answer left ≤ it arrived ≤ T4, whatever the scheduler does in between.
//! With one request at a time on a connection the four timestamps stay inside the round trip and the
//! error bound stays true. With several requests in flight on one connection the stamps may belong to a
//! neighbour, which a load does not mind and a syncing client never does.
//!
//! Reads also carry the kernel's own receive timestamp (SO_TIMESTAMPNS, on Linux): when the data reached
//! the socket, before any process woke up to read it. On loopback that is inside the sender's write, so
//! it takes the time each side needs to wake up and read out of both directions, and the estimate gets
//! much closer. But the kernel gives one timestamp per read, that of a segment it merged the others
//! into, which can be an earlier segment than the one that ended the message; so it serves the estimate
//! only, checked against the bound that the user-space stamps keep (`synclab_core::cristian`).

pub(crate) mod connections;
pub mod frame;
/// The system calls made through `libc`: the one module with `unsafe` code (the workspace denies
/// `unsafe_code` everywhere else), each block with a SAFETY note.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) mod linux;
pub mod socket;
pub mod stamps;
pub mod stream;

pub use connections::{LONG_LIVED, MemberMark};
#[cfg(target_os = "linux")]
pub use linux::{clock_ticks_per_second, yield_to_services};
pub use socket::{ClientIo, MaybeTls, ServerIo, TimedTcp, Transport};
pub use stamps::{ClientStamps, SentAnswer, ServerStamps, Stamper};
pub use stream::{ConnectionInfo, ServerStream, StampedStream};
