//! Memory held by pending tasks, counted by a global allocator that tracks
//! live bytes. A separate test binary: the allocator is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// 100 000 tasks wait on one gate task; the heap they hold, divided by their
/// number, is the per-task cost of the runtime (node, arguments, key entry,
/// the gate's list of dependents), the 8-byte argument value included.
#[test]
fn a_pending_task_holds_less_than_300_bytes() {
    let client = shoal::Client::threads().expect("client");
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let opened = client.submit(
        move || {
            g.wait();
            0u64
        },
        (),
    );
    let n = 100_000u64;
    let mut futures = Vec::with_capacity(n as usize);
    let bytes_before = LIVE_BYTES.load(Ordering::SeqCst);
    let allocations_before = ALLOCATIONS.load(Ordering::SeqCst);
    for i in 0..n {
        futures.push(client.submit(add, (&opened, i)));
    }
    let per_task = (LIVE_BYTES.load(Ordering::SeqCst) - bytes_before) as f64 / n as f64;
    let allocations = (ALLOCATIONS.load(Ordering::SeqCst) - allocations_before) as f64 / n as f64;
    gate.wait();
    let values = client.gather(&futures).expect("all succeed");
    assert_eq!(values.iter().sum::<u64>(), n * (n - 1) / 2);
    eprintln!("live heap per pending task: {per_task:.1} bytes, {allocations:.2} allocations");
    assert!(per_task < 300.0, "a pending task holds {per_task:.1} bytes");
    assert!(allocations <= 3.2, "{allocations:.2} allocations per submit");
}
