//! `berkeley-master`: runs [`synclab::daemon::berkeley_master`]. The `synclab` binary runs the same function when it is invoked
//! under this name (the container image holds `synclab` alone, with `berkeley-master` a link to it).

fn main() -> std::process::ExitCode {
    synclab::daemon::exit(synclab::daemon::berkeley_master::main())
}
