//! `election-node`: see `services/election_node.rs`. The `synclab` binary runs the same code when it is invoked under
//! this name (the container image holds `synclab` alone, with `election-node` a link to it).

#[path = "../election_node.rs"]
mod election_node;

fn main() -> anyhow::Result<()> {
    election_node::main()
}
