//! The hot path does not allocate: a counting global allocator watches the lookups, the seam and the loop
//! guard on real sockets (loopback always; a real REDIRECT in a namespace when privileged).

use meshcap_origdst::{
    Accepted, Fixed, Kernel, ListenerBuilder, LoopGuard, Mapped, Mode, OrigDstSource, OriginalDst, redirect, tproxy,
};
use meshcap_testns::{NetNs, privileged};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the thread-local counter is a
// const-initialised `Cell` that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (ALLOCATIONS.with(Cell::get) - before, r)
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn the_counter_sees_allocations() {
    let (n, v) = allocations(|| vec![1u8; 64]);
    assert!(n >= 1, "the counting allocator must count");
    drop(v);
}

#[test]
fn lookups_on_loopback_do_not_allocate() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).unwrap();
    let (stream, peer) = listener.accept().unwrap();
    let mapped = Mapped::new().with_listen_port(addr.port(), "10.96.0.10:80".parse().unwrap());
    let fixed = Fixed::new("10.96.0.10:80".parse().unwrap());
    let shared: Arc<dyn OrigDstSource> = Arc::new(Kernel::new(Mode::Redirect));
    let guard =
        LoopGuard::new([sa("0.0.0.0:15001"), sa("[::]:15006")]).with_local_addrs(["10.244.0.6".parse().unwrap()]);
    let dst: OriginalDst = "10.96.0.10:80".parse().unwrap();

    let (n, _) = allocations(|| {
        let conn = Accepted::new(&stream, peer);
        // Not redirected (ENOENT), or Unsupported on a kernel without conntrack: neither allocates.
        let _ = redirect(&conn);
        let _ = shared.original_dst(&conn);
        tproxy(&conn).unwrap();
        mapped.original_dst(&conn).unwrap();
        fixed.original_dst(&conn).unwrap();
        Accepted::query(&stream).unwrap();
        guard.check(dst).unwrap();
        guard.check("127.0.0.1:15001".parse().unwrap()).unwrap_err();
    });
    assert_eq!(n, 0, "allocations on the per-connection path");
}

#[test]
fn a_redirected_lookup_does_not_allocate() {
    if !privileged("a_redirected_lookup_does_not_allocate") {
        return;
    }
    let ns = NetNs::new("od").unwrap();
    ns.sh("ip route add local 10.96.0.0/16 dev lo && iptables -t nat -A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001")
        .unwrap();
    let (stream, peer, _client) = ns
        .enter(|| {
            let listener = ListenerBuilder::new(sa("0.0.0.0:15001")).bind().unwrap().into_std();
            let client = TcpStream::connect("10.96.0.10:80").unwrap();
            let (stream, peer) = listener.accept().unwrap();
            (stream, peer, client)
        })
        .unwrap();
    let (n, lookup) = allocations(|| redirect(&Accepted::new(&stream, peer)).unwrap());
    assert_eq!(lookup.redirected(), Some("10.96.0.10:80".parse().unwrap()));
    assert_eq!(n, 0, "allocations on the redirected path");
}
