//! What the benchmarks share: where their plots go.

/// Writes `svg` to `target/plots/NAME.svg` and returns the line to print: where it went, or why not.
pub fn write_plot(name: &str, svg: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plots").join(format!("{name}.svg"));
    match std::fs::create_dir_all(path.parent().expect("target/plots has a parent")).and_then(|()| std::fs::write(&path, svg)) {
        Ok(()) => format!("plot: {}", path.display()),
        Err(e) => format!("cannot write the plot {}: {e}", path.display()),
    }
}
