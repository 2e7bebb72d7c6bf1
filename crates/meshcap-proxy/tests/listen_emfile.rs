//! A real `EMFILE`: the process runs out of descriptors while a client waits in the accept queue. The
//! accept loop must back off (not spin, not die) and serve the client once descriptors are free again.
//!
//! Its own test binary with a single test: it lowers this process's `RLIMIT_NOFILE`.

use std::fs::File;
use std::io;
use std::time::Duration;

use meshcap_proxy::listen::{Connection, ListenerConfig};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(64)
}

#[test]
fn accept_survives_emfile() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = ListenerConfig::new("emfile", "127.0.0.1:0".parse().unwrap())
            .bind()
            .unwrap();
        let addr = listener.local_addr();
        let stats = listener.stats().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(listener.serve(
            |mut c: Connection| async move {
                let _ = c.stream.write_all(b"served").await;
            },
            async move {
                let _ = stopped.await;
            },
        ));
        tokio::task::yield_now().await;

        // Leave room for a few descriptors, then fill the table.
        let original = getrlimit(Resource::Nofile);
        let soft = open_descriptors() + 16;
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(soft),
                maximum: original.maximum,
            },
        )
        .unwrap();
        let mut hog: Vec<File> = Vec::new();
        loop {
            match File::open("/dev/null") {
                Ok(f) => hog.push(f),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => break,
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(hog.len() < 10_000, "RLIMIT_NOFILE not effective");
        }
        // One free slot: the client's socket. The server has none left for the accepted one.
        hog.pop();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            stats.downstream_cx_total.get(),
            0,
            "accepted without a free descriptor?"
        );

        // Descriptors come back: the loop, backing off, picks the client up.
        drop(hog);
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut reply))
            .await
            .expect("served after the descriptors were freed")
            .unwrap();
        assert_eq!(reply, b"served");
        setrlimit(Resource::Nofile, original).unwrap();

        stop.send(()).unwrap();
        let report = server.await.unwrap().unwrap();
        assert_eq!(report.accepted, 1);
        assert!(report.accept_errors >= 1, "{report:?}");
        io::Result::Ok(())
    })
    .unwrap();
}
