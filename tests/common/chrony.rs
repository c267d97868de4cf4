//! chronyd driven by the tests: a private folder per daemon (config, pid file, command socket, log),
//! `chronyd -x` (it never sets the clock) as a server or client, and chronyc's output read.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A UDP port free right now on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private folder for one chronyd: its config, pid file, command socket and log.
pub struct ChronyDir(pub PathBuf);

impl ChronyDir {
    pub fn new(tag: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("synclab-chrony-{tag}-{}-{}", std::process::id(), synclab::random::nonce()));
        std::fs::create_dir_all(&dir).unwrap();
        // chronyd refuses a command socket in a folder others may write to.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self(dir)
    }

    /// Writes the config: `lines`, then a private pid file and command socket, and no UDP command port.
    pub fn config(&self, lines: &str) -> PathBuf {
        let d = self.0.display();
        let conf = format!("{lines}\ncmdport 0\nbindcmdaddress {d}/sock\npidfile {d}/pid\n");
        let path = self.0.join("chrony.conf");
        std::fs::write(&path, conf).unwrap();
        path
    }

    pub fn sock(&self) -> String {
        format!("{}/sock", self.0.display())
    }
}

impl Drop for ChronyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `chronyd -x` (it never sets the clock), stopped when dropped.
pub struct Chronyd {
    pub child: Child,
    pub dir: ChronyDir,
}

impl Chronyd {
    pub fn start(tag: &str, lines: &str) -> Self {
        let dir = ChronyDir::new(tag);
        let conf = dir.config(lines);
        let log = std::fs::File::create(dir.0.join("log")).unwrap();
        let child = Command::new("chronyd")
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("chronyd is installed (scripts/test installs it)");
        let me = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::path::Path::new(&me.dir.sock()).exists() {
            assert!(Instant::now() < deadline, "chronyd did not start: {}", me.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    pub fn chronyc(&self, what: &str) -> String {
        let out = Command::new("chronyc").args(["-h", &self.dir.sock(), what]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `field` in chronyc's "Field : value" output.
pub fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find(|l| l.split(':').next().is_some_and(|k| k.trim() == name)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim())
}

/// How far ahead of the local clock chronyd sees its source, in seconds, by `chronyc tracking`'s
/// "System time" (with -x chronyd applies nothing, so it is the whole correction it would make).
pub fn server_ahead_secs(tracking: &str) -> Option<f64> {
    let v = field(tracking, "System time")?;
    let secs: f64 = v.split_whitespace().next()?.parse().ok()?;
    Some(if v.contains("slow") { secs } else { -secs })
}
