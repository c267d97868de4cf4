//! What the benchmarks share: where their plots go, and how much CPU a process has used.

/// Writes `svg` to `target/plots/NAME.svg` and returns the line to print: where it went, or why not.
pub fn write_plot(name: &str, svg: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plots").join(format!("{name}.svg"));
    match std::fs::create_dir_all(path.parent().expect("target/plots has a parent")).and_then(|()| std::fs::write(&path, svg)) {
        Ok(()) => format!("plot: {}", path.display()),
        Err(e) => format!("cannot write the plot {}: {e}", path.display()),
    }
}

/// CPU time (user + system) a process has used, in seconds, from /proc (0 if it cannot be read).
#[allow(dead_code)] // not every benchmark measures CPU
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After the command name: field 14 (utime) and 15 (stime) of stat are at 11 and 12 here; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}
