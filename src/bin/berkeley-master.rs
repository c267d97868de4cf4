//! `berkeley-master`: see `services/berkeley_master.rs`. The `synclab` binary runs the same code when it is invoked under
//! this name (the container image holds `synclab` alone, with `berkeley-master` a link to it).

#[path = "../berkeley_master.rs"]
mod berkeley_master;

fn main() -> anyhow::Result<()> {
    berkeley_master::main()
}
