//! A throwaway `nats-server` with JetStream for tests: Debian's `nats-server` binary on a
//! free loopback port with its store in a fresh directory, stopped by PID on drop. It can
//! be killed (SIGKILL), restarted on the same port and store, and paused (SIGSTOP) to
//! stall acknowledgements without closing connections.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The binary: `CLUTCH_NATS_SERVER`, else `nats-server` on PATH, else Debian's path.
fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("CLUTCH_NATS_SERVER")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "nats-server not found: install it with `apt-get install -y nats-server` \
         (or point CLUTCH_NATS_SERVER at a nats-server ≥ 2.9 binary)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running (or stopped) JetStream server owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    /// Starts a server; panics with how to install `nats-server` when it is missing.
    pub fn start() -> NatsServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "clutch-nats-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("nats store dir");
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            dir,
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the server with SIGKILL (no shutdown of its own) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)starts the server on the same port and store directory; waits until it
    /// accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log file");
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("nats-server exited at start ({status}):\n{log}");
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "nats-server did not listen within 15 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the server holds connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`NatsServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("server running");
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill {sig} {pid} failed");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused server would ignore nothing (SIGKILL works), but continue it so
            // the kill below is the only thing that ends it.
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
