//! `berkeley-slave`: runs [`synclab::daemon::berkeley_slave`]. The `synclab` binary runs the same function when it is invoked
//! under this name (the container image holds `synclab` alone, with `berkeley-slave` a link to it).

fn main() -> std::process::ExitCode {
    synclab::daemon::exit(synclab::daemon::berkeley_slave::main())
}
