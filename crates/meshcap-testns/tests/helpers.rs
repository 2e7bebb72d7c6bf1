//! The process and file helpers: a scratch folder another uid can use, a process run as that uid inside a
//! namespace, a polite stop, and sockets made inside a namespace.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use meshcap_testns::{ChildGuard, NetNs, TempDir, envoy_executable, privileged};

#[test]
fn temp_dir_is_world_readable_and_removed_on_drop() {
    let path;
    {
        let dir = TempDir::new("helpers").unwrap();
        path = dir.path().to_path_buf();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
        let file = dir.write("a.txt", "hello").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
        let log = dir.writable_file("log").unwrap();
        assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o666);
        let exe = dir.install_executable(Path::new("/bin/sh")).unwrap();
        assert_eq!(exe, dir.join("sh"));
        let out = Command::new(&exe).args(["-c", "echo ok"]).output().unwrap();
        assert_eq!(out.stdout, b"ok\n");
    }
    assert!(!path.exists(), "{} left behind", path.display());
}

#[test]
fn envoy_executable_leaves_binaries_alone_and_resolves_the_wheel_script() {
    assert_eq!(envoy_executable(Path::new("/bin/sh")), Path::new("/bin/sh"));
    // A fake venv: bin/envoy is a script, the real binary sits in the package's _bin folder.
    let dir = TempDir::new("venv").unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("lib/python3.11/site-packages/envoy/_bin")).unwrap();
    let script = dir.write("bin/envoy", "#!/usr/bin/python3\n").unwrap();
    let real = dir
        .write("lib/python3.11/site-packages/envoy/_bin/envoy", "\x7fELF")
        .unwrap();
    assert_eq!(envoy_executable(&script), real);
}

#[test]
fn terminate_sends_sigterm_first() {
    // A shell that turns SIGTERM into exit code 7 proves the signal was TERM, not KILL.
    let child = Command::new("sh")
        .args(["-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    let mut first = [0u8; 6];
    guard.0.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    let status = guard.terminate(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(7));
}

#[test]
fn command_as_runs_as_that_uid_inside_the_namespace() {
    if !privileged("command_as_runs_as_that_uid_inside_the_namespace") {
        return;
    }
    let ns = NetNs::new("helpers").unwrap();
    let dir = TempDir::new("helpers").unwrap();
    let id = dir.install_executable(Path::new("/usr/bin/id")).unwrap();
    let out = ns.command_as(5678, 5679, &id).args(["-u"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5678");
    let out = ns.command_as(5678, 5679, &id).args(["-G"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5679");
}

#[test]
fn sockets_made_inside_a_namespace_stay_there() {
    if !privileged("sockets_made_inside_a_namespace_stay_there") {
        return;
    }
    let ns = NetNs::new("helpers").unwrap();
    // Port 1 on the host's loopback is not this listener: only a connect made inside reaches it.
    let listener = ns.bind_tcp("127.0.0.1:1".parse().unwrap()).unwrap();
    let mut client = ns
        .connect_tcp("127.0.0.1:1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    client.write_all(b"x").unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
}

#[test]
#[should_panic(expected = "not found: cargo build --example no-such-example")]
fn example_binary_says_how_to_build_a_missing_example() {
    meshcap_testns::example_binary("no-such-example");
}
