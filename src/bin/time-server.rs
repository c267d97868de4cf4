//! `time-server`: runs [`synclab::daemon::time_server`]. The `synclab` binary runs the same function when it is invoked
//! under this name (the container image holds `synclab` alone, with `time-server` a link to it).

fn main() -> std::process::ExitCode {
    synclab::daemon::exit(synclab::daemon::time_server::main())
}
