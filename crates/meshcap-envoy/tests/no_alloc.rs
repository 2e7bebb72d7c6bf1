//! `Resources::listener_for` runs once per accepted connection: it must not allocate. A counting global
//! allocator (this test binary only) checks it across hits, wildcard hits and passthrough fallbacks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;

use meshcap_envoy::{Dataplane, Resources, TrafficDirection};

struct Counting;

thread_local! {
    /// Allocations made by this thread (the harness's other threads allocate too, concurrently).
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // A const-initialized thread local needs no allocation; during thread teardown it may be gone.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments, so `System`'s guarantees hold;
// the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System.alloc` (through `alloc` above) with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from this allocator with `layout`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn listener_for_does_not_allocate() {
    let dataplane = Dataplane::from_yaml(
        "
type: Dataplane
mesh: default
name: web-01
networking:
  address: 10.244.0.6
  inbound:
    - {port: 5000, tags: {kuma.io/service: backend, kuma.io/protocol: http}}
    - {port: 5001, tags: {kuma.io/service: backend-tcp}}
  outbound:
    - {port: 10001, tags: {kuma.io/service: db}}
    - {address: 'fd00::a', port: 8080, tags: {kuma.io/service: peer}}
  transparentProxying: {redirectPortInbound: 15006, redirectPortOutbound: 15001}
",
    )
    .expect("dataplane");
    let resources = Resources::from_dataplane(&dataplane).expect("resources");
    let destinations: Vec<SocketAddr> = [
        "10.244.0.6:5000",
        "127.0.0.1:10001",
        "[fd00::a]:8080",
        "10.1.2.3:15006",
        "10.244.0.5:8080",
        "[fd00::5]:443",
    ]
    .iter()
    .map(|s| s.parse().expect("addr"))
    .collect();

    let before = allocations();
    let mut found = 0usize;
    for _ in 0..1000 {
        for dst in &destinations {
            for direction in [TrafficDirection::Inbound, TrafficDirection::Outbound] {
                found += usize::from(resources.listener_for(direction, *dst).is_some());
            }
        }
    }
    let allocated = allocations() - before;
    assert_eq!(found, 1000 * destinations.len() * 2, "every destination has an owner");
    assert_eq!(allocated, 0, "listener_for allocated {allocated} times");
    // The counter works: building resources does allocate.
    let before = allocations();
    drop(Resources::from_dataplane(&dataplane));
    assert!(allocations() > before);
}
