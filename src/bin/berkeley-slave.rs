//! `berkeley-slave`: see `services/berkeley_slave.rs`. The `synclab` binary runs the same code when it is invoked under
//! this name (the container image holds `synclab` alone, with `berkeley-slave` a link to it).

#[path = "../berkeley_slave.rs"]
mod berkeley_slave;

fn main() -> anyhow::Result<()> {
    berkeley_slave::main()
}
