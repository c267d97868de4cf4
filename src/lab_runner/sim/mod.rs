//! The simulator: the election cores on an in-memory network in virtual time ([`network`]: no sleeps,
//! no thread per node, the same seed the same run on any machine under any load), and the lab backend
//! around it ([`backend`]: `synclab lab run --sim`), which plays the same plans, through the same
//! player, into the same history and checkers as the real backends. The tests of the election rules
//! drive [`network::Sim`] directly.

pub mod backend;
pub mod network;

pub use backend::SimBackend;
pub use network::{LinkFault, Sim, SimConfig, Violation};
