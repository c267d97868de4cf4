//! NTP over UDP: the time server's NTPv4 endpoint ([`server`]) and the client that syncs a device's clock
//! from any NTP server ([`client`]). The protocol's logic is `synclab_core::ntp`; this is the socket, the
//! kernel's timestamps and the task.
//!
//! Receive times are the kernel's (SO_TIMESTAMPNS), taken when the datagram reached the socket. The
//! server's transmit times are the kernel's software transmit stamps (SO_TIMESTAMPING, read from the
//! socket's error queue) where the platform gives them, else the time read just before the send; the
//! former reach clients in interleaved mode.

pub mod client;
pub mod nts;
pub mod server;

pub use client::{NtpClient, NtpMode};
pub use nts::{KeLimits, KeTarget, NtsKeServer, NtsKeStats};
pub use server::{NtpServer, NtpStats};
