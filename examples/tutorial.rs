//! The parallelisation tutorial, the shoal way.
//!
//! Each section mirrors a section of the tutorial shoal grew from (Dask and
//! Ray in Python) and runs here as plain Rust, on a local cluster of worker
//! processes — this program, started again, becomes each worker:
//!
//! 1. functions become tasks: `submit`, futures, `result`;
//! 2. many tasks at once: `map`, `gather`, `as_completed`;
//! 3. lazy graphs: `delayed`, `compute`, a picture of the graph;
//! 4. failures stay with their task;
//! 5. a progress bar (on the in-process thread pool);
//! 6. heavier work spread over the workers;
//! 7. chunked arrays: the tutorial's `arcsin(x) + arccos(y)` over two random
//!    10 000 × 10 000 × 10 arrays, summed, and exercise 5 (chunk sizes);
//! 8. on a batch system: the job script each SLURM job of workers runs
//!    (`JobQueueCluster`, dask-jobqueue's way), and `shoal efficiency` for
//!    the tutorial's qacct exercises;
//! 9. classes become actors: a `Counter` on a worker, its methods called
//!    from here;
//! 10. Ray's spelling: `increment.remote(x)`, `shoal::get`, and four
//!     `Counter::remote()` actors;
//! 11. bags: `from_sequence(range(10))` mapped with `double`, then filter,
//!     foldby and a word count, each partition's steps fused into one task.
//!
//! Run it with `cargo run --release -p shoal --example tutorial`. The
//! tutorial's dask-mpi program, which `mpirun` starts, is
//! `examples/mpi_array.rs`, with its batch scripts in `examples/hpc/`.

use std::time::{Duration, Instant};

use shoal::array::{self, RandomState};
use shoal::bag;
use shoal::jobqueue::{JobQueueCluster, Manager};
use shoal::{Client, Delayed, LocalCluster, ProgressBar, as_completed, delayed};

#[shoal::remote]
fn double(x: i64) -> i64 {
    x * 2
}

#[shoal::remote]
fn inc(x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(100));
    x + 1
}

#[shoal::remote]
fn add(a: i64, b: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(100));
    a + b
}

#[shoal::remote]
fn is_even(x: i64) -> bool {
    x % 2 == 0
}

#[shoal::remote]
fn last_digit(x: i64) -> i64 {
    x % 10
}

#[shoal::remote]
fn plus(a: i64, b: i64) -> i64 {
    a + b
}

#[shoal::remote]
fn total(values: Vec<i64>) -> i64 {
    values.iter().sum()
}

#[shoal::remote]
fn mean_of_positive(values: Vec<f64>) -> Result<f64, String> {
    if values.iter().any(|v| *v < 0.0) {
        return Err(format!("{} negative values in the input", values.iter().filter(|v| **v < 0.0).count()));
    }
    Ok(values.iter().sum::<f64>() / values.len() as f64)
}

#[shoal::remote]
fn percent(fraction: f64) -> f64 {
    fraction * 100.0
}

/// A small counter-based generator: the same seed gives the same numbers on
/// any worker.
#[shoal::remote]
fn simulate(seed: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    let mut sum = 0.0;
    for _ in 0..1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum += (x >> 11) as f64 / (1u64 << 53) as f64;
    }
    sum / 1_000_000.0
}

#[shoal::remote]
fn average(a: f64, b: f64) -> f64 {
    (a + b) / 2.0
}

/// The tutorial's counter: an actor keeps its state between calls.
struct Counter {
    n: u64,
}

#[shoal::actor]
impl Counter {
    /// A counter at zero.
    pub(crate) fn new() -> Counter {
        Counter { n: 0 }
    }

    /// Counts one more.
    pub(crate) fn increment(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    /// The count.
    pub(crate) fn read(&self) -> u64 {
        self.n
    }
}

#[shoal::remote]
fn increment(x: u64) -> u64 {
    x + 1
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let cluster = LocalCluster::builder().processes(true).workers(2).threads_per_worker(1).build()?;
    let client = cluster.client()?;
    println!("local cluster at tcp://{} up in {:.2?}", cluster.address(), start.elapsed());
    for w in client.scheduler_info()? {
        println!("  worker {} at {} with {} thread(s)", w.name, w.data_address, w.threads);
    }
    println!();

    println!("## 1. Functions become tasks");
    let future = client.submit(double, (10,));
    println!("{future}");
    println!("result: {}", future.result()?);
    println!("{future}\n");

    println!("## 2. Many tasks at once");
    let start = Instant::now();
    let futures = client.map(inc, 0..8i64);
    let sum = client.submit(total, (&futures,));
    println!("8 tasks of 100 ms on 2 workers, summed by a ninth: {} in {:.2?}", sum.result()?, start.elapsed());
    let doubles = client.map(double, 0..5i64);
    let finished: Vec<i64> = as_completed(doubles).map(|f| f.result()).collect::<Result<_, _>>()?;
    println!("as they finished: {finished:?}\n");

    println!("## 3. Lazy graphs with delayed");
    let x = delayed(inc, (1,));
    let y = delayed(inc, (2,));
    let z = delayed(add, (&x, &y));
    println!("{z} needs {} tasks", z.graph().len());
    let start = Instant::now();
    println!("z = {} in {:.2?} (inc and inc run in parallel, then add)", z.compute_with(&client)?, start.elapsed());
    let picture = std::env::temp_dir().join("shoal-tutorial-graph.svg");
    match z.visualize(&picture) {
        Ok(()) => println!("graph picture: {}", picture.display()),
        Err(e) => {
            let dot = picture.with_extension("dot");
            z.visualize(&dot)?;
            println!("({e}); the graph is in {}", dot.display());
        }
    }
    println!();

    println!("## 4. Failures stay with their task");
    let good = client.submit(mean_of_positive, (vec![1.0, 2.0, 3.0],));
    let bad = client.submit(mean_of_positive, (vec![1.0, -2.0, -3.0],));
    let after_bad = client.submit(percent, (&bad,));
    println!("good: {:?}", good.result());
    println!("bad: {}", bad.result().expect_err("negative input"));
    println!("depends on bad: {}", after_bad.result().expect_err("dependency failed"));
    let closure = client.submit(|m: f64| m * 100.0, (0.5,));
    println!("a closure: {}", closure.result().expect_err("closures stay in this process"));
    println!("the cluster is fine: {}\n", client.submit(double, (21,)).result()?);

    println!("## 5. A progress bar");
    let threads = Client::threads()?;
    let _bar = ProgressBar::enable();
    let parts: Vec<Delayed<i64>> = (0..20).map(|i| delayed(inc, (i,))).collect();
    let sum = delayed(total, (&parts,));
    println!("sum of 20 slow increments on this process's threads: {}\n", sum.compute_with(&threads)?);

    println!("## 6. Heavier work spread over the workers");
    let start = Instant::now();
    let mut level = client.map(simulate, 0..8u64);
    while level.len() > 1 {
        level = level.chunks(2).map(|p| client.submit(average, (&p[0], &p[1]))).collect();
    }
    println!("mean of 8 x 1 000 000 uniform numbers: {:.4} in {:.2?}\n", level[0].result()?, start.elapsed());

    println!("## 7. Chunked arrays");
    let rng = RandomState::new(0);
    let x = rng.random(&[10_000, 10_000, 10], [1_000, 1_000, 5]);
    let y = rng.random(&[10_000, 10_000, 10], [1_000, 1_000, 5]);
    let z = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
    println!("{z}\n");
    let fused = z.to_delayed()?.iter().map(|t| t.graph().len()).sum::<usize>();
    println!("{} tasks as written; {fused} after culling and fusion (a list task per block included)", z.task_count());
    let picture = std::env::temp_dir().join("shoal-array.svg");
    match z.visualize(&picture, true) {
        Ok(()) => println!("graph picture: {}", picture.display()),
        Err(e) => println!("no picture ({e})"),
    }
    let start = Instant::now();
    let values = z.compute_with(&client)?;
    println!("z[..5] = {:?} in {:.2?}", &values.as_slice().unwrap_or(&[])[..5], start.elapsed());
    println!(
        "z.mean() / 100 000 = {:.6} (pi / 2 = {:.6})",
        values.mean().unwrap_or(f64::NAN) / 100_000.0,
        std::f64::consts::FRAC_PI_2
    );
    println!("\nexercise 5: the sum of 10 000 000 uniform numbers");
    for chunk in [1_000, 100_000] {
        let start = Instant::now();
        let total = rng.random(&[10_000_000], chunk).sum(..).compute_with(&client)?;
        println!("  chunks of {chunk:>7}: {:.1} in {:.2?}", total.sum(), start.elapsed());
    }

    println!("\n## 8. On a batch system");
    // What dask-jobqueue does: the scheduler runs here, each job runs
    // workers of this same program. Here only the job script is shown;
    // `cluster.scale(4)` would submit four such jobs with sbatch.
    let logs = std::env::temp_dir().join("shoal-tutorial-jobs");
    let batch = JobQueueCluster::builder(Manager::Slurm)
        .cores(8)
        .memory(16 << 30)
        .walltime("01:00:00")
        .scheduler_ip(std::net::IpAddr::from([127, 0, 0, 1]))
        .log_directory(&logs)
        .build()?;
    // The cluster token is not in it: the jobs read it from a file only
    // you may read, so the script can be shown and kept.
    println!("each SLURM job would run:\n{}", batch.job_script());
    drop(batch);
    let _ = std::fs::remove_dir_all(&logs);
    println!(
        "\nafterwards, how well a job used what it reserved (the tutorial's qacct exercises):\n  \
         shoal efficiency <job id>      # sacct on SLURM, qacct -j on Grid Engine"
    );

    println!("\n## 9. Classes become actors");
    // Dask: future = client.submit(Counter, actor=True); counter = future.result()
    let counter = client.actor(Counter::new, ());
    println!("{}", counter.actor_ref());
    let future = counter.increment();
    println!("counter.increment() -> {}", future.result()?);
    println!("counter.increment() -> {}", counter.increment().result()?);
    println!("counter.read() -> {}", counter.read().result()?);

    println!("\n## 10. Ray's spelling: tasks and actors");
    use shoal::ray::Remote;
    // Ray: futures = [increment.remote(x) for x in range(4)]; ray.get(futures)
    let futures: Vec<_> = (0..4u64).map(|x| increment.remote(x)).collect();
    println!("ray.get([increment.remote(x) for x in range(4)]) -> {:?}", shoal::get(&futures)?);
    // Ray: counters = [Counter.remote() for i in range(4)]
    let counters: Vec<CounterHandle> = (0..4).map(|_| Counter::remote()).collect();
    let futures: Vec<_> = counters.iter().map(|c| c.increment().remote()).collect();
    println!("ray.get([c.increment.remote() for c in counters]) -> {:?}", shoal::get(&futures)?);

    println!("\n## 11. Bags: map, filter, fold and groupby over plain values");
    // Dask: b = db.from_sequence(range(10)); b.map(double).compute()
    let b = bag::from_sequence(0..10i64);
    println!("{b}");
    println!("b.map(double).compute() -> {:?}", b.map(double).compute_with(&client)?);
    let numbers = bag::range(1_000_000, 20).map(double).filter(is_even);
    println!("sum of 2x over range(1 000 000): {}", numbers.fold(plus, plus, None).compute_with(&client)?);
    let mut by_digit = numbers.foldby(last_digit, plus, None, plus).compute_with(&client)?;
    by_digit.sort();
    println!("foldby(last digit, +): {by_digit:?}");
    let mut groups = bag::range(10, 3).groupby(is_even).compute_with(&client)?;
    groups.sort();
    println!("range(10).groupby(is_even) -> {groups:?}");
    let text = bag::from_sequence(["the quick brown fox", "jumps over the lazy dog", "the end"].map(String::from));
    let common = text.split_whitespace().frequencies(true).take_with(2, &client)?;
    println!("most common words: {common:?}");
    Ok(())
}
