//! A real Envoy for the live tests: started on a bootstrap (loopback, admin on an ephemeral port),
//! stopped and cleaned up on drop, queried over its admin interface.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meshcap_testns::{ChildGuard, TempDir, wait_until};

/// A running Envoy.
pub(crate) struct Envoy {
    _child: ChildGuard,
    admin: SocketAddr,
    stdout: PathBuf,
    _dir: TempDir,
}

impl Envoy {
    /// Start `envoy` on `bootstrap` (JSON) and wait until its admin says `LIVE`.
    pub(crate) fn start(envoy: &Path, tag: &str, bootstrap: &str) -> Envoy {
        let dir = TempDir::new(&format!("fault-{tag}")).expect("temp dir");
        let config = dir.write("bootstrap.json", bootstrap).expect("bootstrap");
        let admin_file = dir.join("admin.txt");
        let stdout = dir.join("stdout.txt");
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&config)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "error",
                "--file-flush-interval-msec",
                "50",
            ])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn envoy");
        let child = ChildGuard::new(child);
        let mut admin = None;
        let ready = wait_until(Duration::from_secs(30), || {
            if admin.is_none() {
                admin = std::fs::read_to_string(&admin_file)
                    .ok()
                    .and_then(|a| a.trim().parse().ok());
            }
            admin.is_some_and(|a| http_get(a, "/ready").trim() == "LIVE")
        });
        assert!(ready, "envoy did not become ready");
        Envoy {
            _child: child,
            admin: admin.unwrap(),
            stdout,
            _dir: dir,
        }
    }

    /// The admin address.
    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The file Envoy's stdout goes to.
    #[allow(dead_code)] // Not every test binary reads it.
    pub(crate) fn stdout(&self) -> &Path {
        &self.stdout
    }
}

/// `GET path` with `connection: close`; the body (de-chunked), or empty when there is no response.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let Some((head, body)) = out.split_once("\r\n\r\n") else {
        return String::new();
    };
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    // De-chunk: `<hex size>\r\n<data>\r\n` ... `0\r\n\r\n`.
    let mut decoded = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        decoded.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    decoded
}
