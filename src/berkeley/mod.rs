//! The Berkeley algorithm over gRPC: the master that runs the rounds ([`master`]) and the slaves it
//! keeps together ([`slave`]). The round's arithmetic and the frequency estimator are
//! `synclab_core::berkeley`.

pub mod master;
pub mod slave;
