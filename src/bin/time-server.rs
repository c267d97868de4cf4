//! `time-server`: see `services/time_server.rs`. The `synclab` binary runs the same code when it is invoked under
//! this name (the container image holds `synclab` alone, with `time-server` a link to it).

#[path = "../time_server.rs"]
mod time_server;

fn main() -> anyhow::Result<()> {
    time_server::main()
}
