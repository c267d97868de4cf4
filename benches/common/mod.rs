//! What the benchmarks share: where their plots go, and how much CPU a process has used.

/// Writes `svg` to `target/plots/NAME.svg` and returns the line to print: where it went, or why not.
pub fn write_plot(name: &str, svg: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plots").join(format!("{name}.svg"));
    match std::fs::create_dir_all(path.parent().expect("target/plots has a parent")).and_then(|()| std::fs::write(&path, svg)) {
        Ok(()) => format!("plot: {}", path.display()),
        Err(e) => format!("cannot write the plot {}: {e}", path.display()),
    }
}

/// CPU time (user + system) a process has used, in seconds (0 if it cannot be read): the harness's
/// one reading of it, at the system's tick rate.
#[allow(dead_code)] // not every benchmark measures CPU
pub fn cpu_seconds(pid: u32) -> f64 {
    synclab_harness::cpu::process_cpu_seconds(pid).unwrap_or(0.0)
}
