//! How much CPU a process has used: its user and system time from /proc, in the kernel's own ticks.
//!
//! The one reading of CPU time for the benchmarks and the tests. The tick rate is the system's
//! (`sysconf(_SC_CLK_TCK)`, through `synclab::net`), never assumed to be 100 Hz.

/// CPU time (user + system) `pid` has used so far, in seconds; `None` if it cannot be read (the
/// process is gone, or the system gives no tick rate).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    let hz = synclab::net::clock_ticks_per_second()?;
    Some(ticks as f64 / hz as f64)
}

/// utime + stime, in clock ticks, from the text of /proc/PID/stat. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields are counted from the last `)`:
/// utime and stime (fields 14 and 15) are the 12th and 13th after it.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the field positions (utime and stime, counted after a command name with `) (` in it) and
    /// that a short or damaged line reads as nothing rather than as zero.
    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        let stat = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 900 1000 50";
        assert_eq!(stat_cpu_ticks(stat), Some(281));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1 2 3"), None);
        assert_eq!(stat_cpu_ticks("4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 ten 31"), None);
        assert_eq!(stat_cpu_ticks("no name here"), None);
    }

    /// Pins the reading against the kernel: this process's CPU time grows while it spins, and by no
    /// more than the wall time it spun times the CPUs (a wrong field would not grow; a tick rate
    /// assumed too low would grow faster than time passes). A process that does not exist has none.
    #[test]
    fn this_process_cpu_time_grows_while_it_spins() {
        let me = std::process::id();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let before = process_cpu_seconds(me).expect("this process's CPU time");
        let started = std::time::Instant::now();
        let mut used = 0.0;
        let mut x = 0u64;
        // Spin until 100 ms of CPU time has been counted (at most 20 s, on a machine busy with others).
        while used < 0.1 && started.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
            used = process_cpu_seconds(me).expect("this process's CPU time") - before;
        }
        let wall = started.elapsed().as_secs_f64();
        assert!(used >= 0.1, "spun {wall:.2} s, CPU time grew by {used} s");
        // A tick of rounding on each reading.
        assert!(used <= wall * cpus + 0.05, "{used} s of CPU in {wall:.2} s on {cpus} CPUs");
        assert_eq!(process_cpu_seconds(u32::MAX), None);
    }
}
