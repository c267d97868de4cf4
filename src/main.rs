//! `synclab`: the user CLI ([`synclab::cmd`]) and, busybox-style, every service ([`synclab::daemon`]):
//! invoked under a service's name (`time-server`, `berkeley-master`, `berkeley-slave`, `election-node`,
//! e.g. through a link), it runs that service. The container image holds this one binary and those links.

fn main() -> std::process::ExitCode {
    match std::env::args_os().next().and_then(|arg0| synclab::daemon::by_name(&arg0)) {
        Some(service) => synclab::daemon::exit(service()),
        None => synclab::cmd::main(),
    }
}
