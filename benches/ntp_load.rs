//! NTP load: answered requests per second and server CPU per request, for any NTP server on this machine.
//!
//!   cargo bench --bench ntp_load -- ADDR PID [SECONDS=5] [THREADS=2]
//!   NTS_KE=HOST:PORT NTS_CA=FILE cargo bench --bench ntp_load -- ADDR PID [SECONDS] [THREADS]
//!   NTS_CA=FILE cargo bench --bench ntp_load -- ke KE_ADDR PID [SECONDS] [THREADS]
//!
//! THREADS client threads each keep 32 requests in flight on their own socket for SECONDS; the server's
//! CPU time (user + system, from /proc/PID/stat) over the run is divided by the replies. Prints one
//! line: `answered_per_sec=… cpu_us_per_request=… answered=… sent=…`. scripts/bench-ntp runs it
//! against synclab's time server and chronyd in the same run. With NTS_KE, every request is an NTS
//! request (one NTS-KE session first; its cookie and keys serve every request, which a stateless
//! server answers alike), and replies are counted when longer than a header. `ke`: THREADS threads run
//! NTS-KE sessions back to back for SECONDS; prints `handshakes_per_sec=… cpu_us_per_handshake=…`.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's /proc/PID/stat");
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn request(n: u64) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0] = 4 << 3 | 3;
    b[40..48].copy_from_slice(&(n | 1 << 63).to_be_bytes());
    b
}

/// NTS requests for one thread: 256 of them (their transmit timestamps differ), from one NTS-KE session.
fn nts_requests(ke: &synclab::ntp::nts::KeOutcome, thread: u64) -> Vec<Vec<u8>> {
    use synclab_core::ntp::nts::fields;
    (0..256u64)
        .map(|i| {
            let n = thread << 40 | i;
            let uid = [(n % 251) as u8; 32];
            fields::client_request(&request(n), &uid, &ke.cookies[0], 0, &ke.keys.c2s, &[(i % 256) as u8; 16])
        })
        .collect()
}

fn ke_target(addr: &str) -> synclab::ntp::KeTarget {
    let ca = std::env::var("NTS_CA").expect("NTS_CA: the CA of the NTS-KE server's certificate");
    synclab::ntp::KeTarget {
        addr: addr.to_string(),
        config: synclab::tls::nts_ke_client_config(std::path::Path::new(&ca)).expect("NTS_CA"),
        timeout: Duration::from_secs(5),
    }
}

/// NTS-KE sessions back to back from `threads` threads for `secs`, against the server at `addr`.
fn handshakes(addr: &str, pid: &str, secs: u64, threads: usize) {
    let target = ke_target(addr);
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tick = 1e6 / clock_ticks_per_sec();
    let cpu0 = cpu_ticks(pid);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (target, done, failed) = (target.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                while Instant::now() < end {
                    match rt.block_on(synclab::ntp::nts::establish(&target)) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = (cpu_ticks(pid) - cpu0) as f64 * tick;
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "handshakes_per_sec={:.0} cpu_us_per_handshake={:.0} done={done} failed={failed}",
        done as f64 / elapsed,
        cpu_us / done.max(1) as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if args.first().map(String::as_str) == Some("ke") && args.len() >= 3 {
        let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5);
        let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
        return handshakes(&args[1], &args[2], secs, threads);
    }
    if args.len() < 2 {
        eprintln!("usage: cargo bench --bench ntp_load -- ADDR PID [SECONDS] [THREADS]");
        return;
    }
    let (addr, pid) = (args[0].clone(), args[1].clone());
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let nts = std::env::var("NTS_KE").ok().map(|ke| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Arc::new(rt.block_on(synclab::ntp::nts::establish(&ke_target(&ke))).expect("NTS-KE"))
    });
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tick = 1e6 / clock_ticks_per_sec();
    let cpu0 = cpu_ticks(&pid);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, sent, answered) = (addr.clone(), sent.clone(), answered.clone());
            let requests = nts.as_ref().map(|ke| nts_requests(ke, t as u64));
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(&addr).unwrap();
                socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                let mut n = (t as u64) << 40;
                let mut buf = [0u8; 2048];
                while Instant::now() < end {
                    for _ in 0..32 {
                        n += 1;
                        let ok = match &requests {
                            Some(r) => socket.send(&r[n as usize % r.len()]).is_ok(),
                            None => socket.send(&request(n)).is_ok(),
                        };
                        if ok {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    for _ in 0..32 {
                        match socket.recv(&mut buf) {
                            Ok(48) if requests.is_none() => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            // An authenticated reply (a NAK, header and identifier alone, is 84 bytes).
                            Ok(len) if len >= 128 && requests.is_some() => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = (cpu_ticks(&pid) - cpu0) as f64 * tick;
    let (sent, answered) = (sent.load(Ordering::Relaxed), answered.load(Ordering::Relaxed));
    println!(
        "answered_per_sec={:.0} cpu_us_per_request={:.2} answered={answered} sent={sent}",
        answered as f64 / elapsed,
        cpu_us / answered.max(1) as f64
    );
}

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
