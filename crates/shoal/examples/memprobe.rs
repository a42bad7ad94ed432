use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 { LIVE.fetch_add(l.size() as isize, Ordering::Relaxed); COUNT.fetch_add(1, Ordering::Relaxed); unsafe { System.alloc(l) } }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) { LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed); unsafe { System.dealloc(p, l) } }
}
#[global_allocator]
static A: Counting = Counting;
fn add(a: u64, b: u64) -> u64 { a + b }
fn main() {
    let client = shoal::Client::threads().unwrap();
    let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    let g = gate.clone();
    let opened = client.submit(move || { g.wait(); 0u64 }, ());
    let n = 200_000u64;
    let mut futures = Vec::with_capacity(n as usize);
    let before = LIVE.load(Ordering::Relaxed); let c0 = COUNT.load(Ordering::Relaxed);
    for i in 0..n { futures.push(client.submit(add, (&opened, i))); }
    let after = LIVE.load(Ordering::Relaxed); let c1 = COUNT.load(Ordering::Relaxed);
    println!("live bytes per pending task: {:.1}, allocations per submit: {:.2}", (after - before) as f64 / n as f64, (c1 - c0) as f64 / n as f64);
    gate.wait();
    let _ = client.gather(&futures);
}
