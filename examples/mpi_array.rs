//! The tutorial's dask-mpi program, the shoal way: started by `mpirun`,
//! rank 0 becomes the scheduler, rank 1 runs this `main`, and ranks 2 and
//! up are the workers; no MPI library is linked.
//!
//! ```text
//! cargo build --release -p shoal --example mpi_array
//! mpirun -np 8 target/release/examples/mpi_array            # Open MPI
//! mpiexec.mpich -n 8 target/release/examples/mpi_array       # MPICH
//! srun -n 8 target/release/examples/mpi_array                # SLURM
//! mpirun -np 4 target/release/examples/mpi_array 2000,2000,10 1000,1000,5
//! ```
//!
//! It computes `(arcsin(x) + arccos(y)).sum(axis=(1, 2))` over two random
//! arrays (the tutorial's shape is 100 000 × 100 000 × 10 in chunks of
//! 10 000 × 10 000 × 5; the default here is 10 000 × 10 000 × 10, which
//! a laptop's cores finish in seconds) and prints the first values.

use std::time::Instant;

use shoal::array::{self, RandomState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = shoal::init_mpi();
    let mut args = std::env::args().skip(1);
    let shape = dims(args.next().as_deref().unwrap_or("10000,10000,10"), "shape")?;
    let chunks = dims(args.next().as_deref().unwrap_or("1000,1000,5"), "chunks")?;
    let workers = client.scheduler_info()?;
    println!("{} workers: {}", workers.len(), workers.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(" "));

    let rng = RandomState::new(0);
    let x = rng.random(&shape, chunks);
    let y = rng.random(&shape, chunks);
    let z = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
    let start = Instant::now();
    let result = z.compute()?;
    let first: Vec<f64> = result.iter().take(5).copied().collect();
    println!("z[..5] = {first:?}");
    println!("{} values in {:.2?}", result.len(), start.elapsed());
    Ok(())
}

/// Three sizes written `a,b,c`.
fn dims(text: &str, what: &str) -> Result<[usize; 3], String> {
    let sizes: Vec<usize> = text
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("{what} {text:?}: give three sizes, as 2000,2000,10")))
        .collect::<Result<_, _>>()?;
    sizes.try_into().map_err(|_| format!("{what} {text:?}: give three sizes, as 2000,2000,10"))
}
