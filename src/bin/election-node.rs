//! `election-node`: runs [`synclab::daemon::election_node`]. The `synclab` binary runs the same function when it is invoked
//! under this name (the container image holds `synclab` alone, with `election-node` a link to it).

fn main() -> std::process::ExitCode {
    synclab::daemon::exit(synclab::daemon::election_node::main())
}
