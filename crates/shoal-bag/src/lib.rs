//! Bags for shoal, as Dask's `dask.bag`: a [`Bag`] is a partitioned
//! collection of plain values — numbers, strings, records, anything serde
//! can move — with `map`, `filter`, `fold`, `groupby` and the rest; lazy,
//! run on any shoal executor, threads in this process or the workers of a
//! cluster.
//!
//! - Sources: [`from_sequence`] (also by [`from_sequence_npartitions`] or
//!   [`from_sequence_partition_size`]), [`range`], [`from_text_files`]
//!   (glob; plain, gzip, zstd; read on the workers), [`from_delayed`],
//!   [`from_futures`].
//! - Steps fused into one task per partition: [`Bag::map`],
//!   [`Bag::filter`], [`Bag::flat_map`], [`Bag::map_partitions`],
//!   [`Bag::map_with`] (another bag), [`Bag::map_value`] (a value).
//! - Reductions as trees of tasks (`split_every`): [`Bag::fold`],
//!   [`Bag::reduction`], [`Bag::foldby`], [`Bag::frequencies`],
//!   [`Bag::distinct`], [`Bag::count`], [`Bag::sum`], [`Bag::mean`],
//!   [`Bag::min`], [`Bag::max`], [`Bag::var`], [`Bag::std`],
//!   [`Bag::topk`]; the per-partition part runs in the same task as the
//!   partition's steps, so only partial results cross the network.
//! - [`Bag::groupby`]: a shuffle, partition to partition between workers.
//! - [`Bag::zip`], [`Bag::product`], [`Bag::repartition`], [`Bag::take`]
//!   (only the partitions it needs), [`Bag::to_text_files`],
//!   [`Bag::compute`], [`Bag::persist`], [`Bag::to_delayed`],
//!   [`Bag::visualize`].
//!
//! ```
//! fn double(x: i64) -> i64 { x * 2 }
//! fn divisible_by_3(x: i64) -> bool { x % 3 == 0 }
//! fn last_digit(x: i64) -> i64 { x % 10 }
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! let b = shoal_bag::from_sequence(0..10);
//! println!("{b}"); // shoal.bag<from_sequence, npartitions=10>
//! assert_eq!(b.map(double).compute()?, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
//!
//! let sums = shoal_bag::range(1_000, 10).map(double).filter(divisible_by_3).foldby(last_digit, add, None, add);
//! let mut sums = sums.compute()?;
//! sums.sort();
//! assert_eq!(sums[0], (0, 66_330));
//! # Ok::<(), shoal_bag::BagError>(())
//! ```
//!
//! On a cluster, steps must be `#[shoal::remote]` functions: the macro
//! registers, with each function of one or two parameters, the loops that
//! run it over a partition, so a worker applies it to a partition at the
//! speed of a plain Rust loop. Elements move encoded with serde; values
//! with equal encodings count as equal (`distinct`, `frequencies`, keys).

mod bag;
mod error;
mod kernels;
mod number;
mod ops;
mod step;
mod text;

pub use bag::{
    Bag, Element, from_delayed, from_futures, from_sequence, from_sequence_npartitions, from_sequence_partition_size,
    from_text_files, range,
};
pub use error::BagError;
pub use number::{Number, Ordered};
pub use ops::Item;
pub use shoal_graph::partition::Partition;
