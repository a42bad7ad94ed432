//! The task functions of bag graphs, registered for remote workers.
//!
//! Every bag task calls one of these; what differs between tasks is data —
//! a [`Plan`] naming the user's functions, which workers look up — so the
//! same few functions serve every bag on every executor.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_graph::TaskError;
use shoal_graph::partition::{Distinct, Encoded, Partition};

use crate::number::{Moments, Number, Ordered};
use crate::step::{Func, Plan, Source};

/// Distinct keys (their encodings) and a value for each, in the same order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Keyed {
    keys: Encoded,
    values: Partition,
}

/// Elements and their keys, bound for one output partition of a shuffle.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Bucket {
    keys: Encoded,
    items: Encoded,
}

/// A partition's elements cut into buckets by the hash of their keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Buckets(Vec<Bucket>);

shoal_graph::task_output!(Keyed, Bucket, Buckets);

/// A partition given as data.
pub(crate) fn literal(part: Partition) -> Partition {
    part
}

/// A fused chain of steps over one partition.
///
/// # Errors
/// A step's failure.
pub(crate) fn run(plan: Arc<Plan>, input: Partition, extras: Vec<Partition>) -> Result<Partition, TaskError> {
    plan.run(input, extras)
}

/// A chain, then `fold` of what it gives with `binop` from `init`.
///
/// # Errors
/// A step's failure.
pub(crate) fn fold_partial(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
    binop: Func,
    init: Option<Partition>,
) -> Result<Partition, TaskError> {
    let part = plan.run(input, extras)?;
    binop.elements().fold(binop.name())?(init.as_ref(), vec![part])
}

/// Folds partial folds with `combine`: one level of the tree.
///
/// # Errors
/// `combine`'s failure.
pub(crate) fn fold_combine(
    combine: Func,
    init: Option<Partition>,
    parts: Vec<Partition>,
) -> Result<Partition, TaskError> {
    combine.elements().fold(combine.name())?(init.as_ref(), parts)
}

/// A chain, then the user's function of the whole partition.
///
/// # Errors
/// A step's failure.
pub(crate) fn reduce_partial(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
    perpartition: Func,
) -> Result<Partition, TaskError> {
    let part = plan.run(input, extras)?;
    perpartition.elements().reduce_partition(perpartition.name())?(part)
}

/// The user's aggregate over the partial results, one level of the tree.
///
/// # Errors
/// `aggregate`'s failure.
pub(crate) fn reduce_combine(aggregate: Func, parts: Vec<Partition>) -> Result<Partition, TaskError> {
    aggregate.elements().reduce_partition(aggregate.name())?(Partition::concat(&parts)?)
}

/// A chain, then a fold per key within the partition.
///
/// # Errors
/// A step's failure.
pub(crate) fn foldby_partial(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
    key: Func,
    binop: Func,
    init: Option<Partition>,
) -> Result<Keyed, TaskError> {
    let part = plan.run(input, extras)?;
    let (items, keys) = key.elements().keys(key.name())?(part)?;
    let (keys, values) = binop.elements().fold_by(binop.name())?(init.as_ref(), vec![items], &keys)?;
    Ok(Keyed { keys, values })
}

/// Merges per-key folds with `combine`: one level of the tree.
///
/// # Errors
/// `combine`'s failure.
pub(crate) fn foldby_combine(combine: Func, init: Option<Partition>, parts: Vec<Keyed>) -> Result<Keyed, TaskError> {
    let mut keys = Encoded::default();
    let mut values = Vec::with_capacity(parts.len());
    for part in parts {
        keys.extend(&part.keys);
        values.push(part.values);
    }
    let (keys, values) = combine.elements().fold_by(combine.name())?(init.as_ref(), values, &keys)?;
    Ok(Keyed { keys, values })
}

/// Keys and values as a partition of pairs `(key, value)`.
///
/// # Errors
/// When a value does not serialise.
pub(crate) fn keyed_pairs(keyed: Keyed) -> Result<Partition, TaskError> {
    let values = keyed.values.encoded()?;
    if values.len() != keyed.keys.len() {
        return Err(TaskError::Failed(format!("{} keys for {} values", keyed.keys.len(), values.len())));
    }
    let mut pairs = Encoded::default();
    for (k, v) in keyed.keys.iter().zip(values.iter()) {
        pairs.push_raw(&[k, v]);
    }
    Ok(Partition::from_encoded(pairs))
}

/// A chain, then how often each element occurs in the partition. Each
/// element is encoded once into a scratch buffer and looked up; only
/// distinct ones are kept.
///
/// # Errors
/// A step's failure.
pub(crate) fn frequencies_partial(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
) -> Result<Keyed, TaskError> {
    let mut slots = Distinct::default();
    let mut counts = Vec::<u64>::new();
    let mut count = |key: &[u8]| *slots.value(key, &mut counts, || 0) += 1;
    match plan.split_words_last() {
        // Words are counted where they lie in their lines: a word count
        // allocates nothing per word (nor, reading a file, per line).
        Some(before) => {
            let mut scratch = Vec::new();
            let mut count_words = |line: &str| -> Result<(), TaskError> {
                for word in line.split_whitespace() {
                    scratch.clear();
                    postcard::to_io(word, &mut scratch)
                        .map_err(|e| TaskError::Failed(format!("a word could not be encoded: {e}")))?;
                    count(&scratch);
                }
                Ok(())
            };
            match (&before.source, before.steps.is_empty()) {
                (Source::Text { path }, true) => crate::text::for_each_line(path, &mut count_words)?,
                _ => before.for_each_chunk(input, extras, &mut |lines| {
                    lines.into_vec::<String>()?.iter().try_for_each(|line| count_words(line))
                })?,
            }
        }
        None => plan.for_each_chunk(input, extras, &mut |part| part.for_each_encoded(&mut count))?,
    }
    let keys = slots.into_keys();
    Ok(Keyed { keys, values: Partition::from_vec(counts) })
}

/// Adds up partial counts: one level of the tree.
///
/// # Errors
/// When a part's counts are not counts.
pub(crate) fn frequencies_combine(parts: Vec<Keyed>) -> Result<Keyed, TaskError> {
    let mut distinct = Distinct::default();
    let mut counts = Vec::<u64>::new();
    for part in parts {
        for (key, n) in part.keys.iter().zip(part.values.into_vec::<u64>()?) {
            *distinct.value(key, &mut counts, || 0) += n;
        }
    }
    Ok(Keyed { keys: distinct.into_keys(), values: Partition::from_vec(counts) })
}

/// Counts as pairs `(element, count)`, most frequent first when `sort`.
///
/// # Errors
/// When the counts are not counts.
pub(crate) fn frequencies_pairs(keyed: Keyed, sort: bool) -> Result<Partition, TaskError> {
    let counts = keyed.values.into_vec::<u64>()?;
    let mut order: Vec<usize> = (0..counts.len()).collect();
    if sort {
        // Stable: equal counts keep first-seen order.
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]));
    }
    let mut pairs = Encoded::default();
    // A u64's varint takes at most 10 bytes.
    let mut count = [0u8; 10];
    for i in order {
        let len = postcard::to_slice(&counts[i], &mut count).map(|c| c.len()).unwrap_or(0);
        pairs.push_raw(&[keyed.keys.get(i), &count[..len]]);
    }
    Ok(Partition::from_encoded(pairs))
}

/// Keeps the first of equal elements.
fn unique(parts: &[Partition]) -> Result<Partition, TaskError> {
    let mut distinct = Distinct::default();
    for part in parts {
        part.for_each_encoded(&mut |item| {
            distinct.slot(item);
        })?;
    }
    Ok(Partition::from_encoded(distinct.into_keys()))
}

/// A chain, then its distinct elements.
///
/// # Errors
/// A step's failure.
pub(crate) fn distinct_partial(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
) -> Result<Partition, TaskError> {
    unique(&[plan.run(input, extras)?])
}

/// Distinct elements of several partitions.
///
/// # Errors
/// When an element does not serialise.
pub(crate) fn distinct_combine(parts: Vec<Partition>) -> Result<Partition, TaskError> {
    unique(&parts)
}

/// A chain, then how many elements it gives.
///
/// # Errors
/// A step's failure.
pub(crate) fn count(plan: Arc<Plan>, input: Partition, extras: Vec<Partition>) -> Result<Partition, TaskError> {
    let mut n = 0u64;
    plan.for_each_chunk(input, extras, &mut |part| {
        n += part.len() as u64;
        Ok(())
    })?;
    Ok(Partition::from_vec(vec![n]))
}

/// The sum of partial counts.
///
/// # Errors
/// When a part is not a count.
pub(crate) fn count_combine(parts: Vec<Partition>) -> Result<Partition, TaskError> {
    let mut total = 0u64;
    for part in parts {
        total += part.into_vec::<u64>()?.into_iter().sum::<u64>();
    }
    Ok(Partition::from_vec(vec![total]))
}

/// A chain, then its elements cut into `n` buckets by the hash of their
/// keys: the first half of a shuffle.
///
/// # Errors
/// A step's failure.
pub(crate) fn split(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
    key: Func,
    n: usize,
) -> Result<Buckets, TaskError> {
    let part = plan.run(input, extras)?;
    let (items, keys) = key.elements().keys(key.name())?(part)?;
    let items = items.encoded()?;
    let mut buckets = vec![Bucket::default(); n.max(1)];
    for (item, k) in items.iter().zip(keys.iter()) {
        let b = &mut buckets[bucket_of(k, n)];
        b.keys.push_raw(&[k]);
        b.items.push_raw(&[item]);
    }
    Ok(Buckets(buckets))
}

/// The output partition a key goes to.
pub(crate) fn bucket_of(key: &[u8], n: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(key) % n.max(1) as u64) as usize
}

/// Bucket `j` of a split: a small task on the split's worker, so only this
/// bucket crosses the network.
///
/// # Errors
/// When there is no bucket `j`.
pub(crate) fn bucket(buckets: Buckets, j: usize) -> Result<Bucket, TaskError> {
    let count = buckets.0.len();
    buckets.0.into_iter().nth(j).ok_or_else(|| TaskError::Failed(format!("no bucket {j} of {count}")))
}

/// The groups `(key, elements)` of the buckets bound for one partition:
/// the second half of a shuffle.
///
/// # Errors
/// Never for well-formed buckets.
pub(crate) fn group(parts: Vec<Bucket>) -> Result<Partition, TaskError> {
    let mut distinct = Distinct::default();
    let mut groups: Vec<Vec<&[u8]>> = Vec::new();
    for part in &parts {
        for (k, item) in part.keys.iter().zip(part.items.iter()) {
            distinct.value(k, &mut groups, Vec::new).push(item);
        }
    }
    let mut out = Encoded::default();
    for (i, items) in groups.into_iter().enumerate() {
        out.push_group(distinct.keys().get(i), items.into_iter());
    }
    Ok(Partition::from_encoded(out))
}

/// Partitions one after another.
///
/// # Errors
/// When an element does not serialise.
pub(crate) fn concat(parts: Vec<Partition>) -> Result<Partition, TaskError> {
    Partition::concat(&parts)
}

/// Piece `piece` of `pieces` near-equal pieces of a partition.
///
/// # Errors
/// When an element does not serialise.
pub(crate) fn slice(part: Partition, piece: usize, pieces: usize) -> Result<Partition, TaskError> {
    let items = part.encoded()?;
    let (n, pieces) = (items.len(), pieces.max(1));
    let (start, end) = (n * piece / pieces, n * (piece + 1) / pieces);
    let mut out = Encoded::default();
    for i in start..end.min(n) {
        out.push_raw(&[items.get(i)]);
    }
    Ok(Partition::from_encoded(out))
}

/// The first `n` elements.
///
/// # Errors
/// When an element does not serialise.
pub(crate) fn head(part: Partition, n: usize) -> Result<Partition, TaskError> {
    if part.len() <= n {
        return Ok(part);
    }
    let items = part.encoded()?;
    let mut out = Encoded::default();
    for item in items.iter().take(n) {
        out.push_raw(&[item]);
    }
    Ok(Partition::from_encoded(out))
}

/// Pairs of the elements at equal positions.
///
/// # Errors
/// When the partitions differ in length.
pub(crate) fn zip(a: Partition, b: Partition) -> Result<Partition, TaskError> {
    if a.len() != b.len() {
        return Err(TaskError::Failed(format!(
            "zip of partitions of {} and {} elements: the bags must have equal partitions",
            a.len(),
            b.len()
        )));
    }
    let (a, b) = (a.encoded()?, b.encoded()?);
    let mut out = Encoded::default();
    for (x, y) in a.iter().zip(b.iter()) {
        out.push_raw(&[x, y]);
    }
    Ok(Partition::from_encoded(out))
}

/// Every pair of an element of `a` and one of `b`.
///
/// # Errors
/// When an element does not serialise.
pub(crate) fn product(a: Partition, b: Partition) -> Result<Partition, TaskError> {
    let (a, b) = (a.encoded()?, b.encoded()?);
    let mut out = Encoded::default();
    for x in a.iter() {
        for y in b.iter() {
            out.push_raw(&[x, y]);
        }
    }
    Ok(Partition::from_encoded(out))
}

/// A chain of strings, written to a text file.
///
/// # Errors
/// A step's failure, or the file could not be written.
pub(crate) fn write_text(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
    path: String,
) -> Result<u64, TaskError> {
    let lines = plan.run(input, extras)?.into_vec::<String>()?;
    crate::text::write_lines(&path, &lines)
}

/// A chain of numbers, summed.
///
/// # Errors
/// A step's failure.
pub(crate) fn sum<T: Number>(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
) -> Result<Partition, TaskError> {
    let items = plan.run(input, extras)?.into_vec::<T>()?;
    Ok(Partition::from_vec(vec![items.into_iter().fold(T::ZERO, T::add)]))
}

/// Partial sums, summed.
///
/// # Errors
/// When a part is not a sum of `T`.
pub(crate) fn sum_combine<T: Number>(parts: Vec<Partition>) -> Result<Partition, TaskError> {
    let mut total = T::ZERO;
    for part in parts {
        total = part.into_vec::<T>()?.into_iter().fold(total, T::add);
    }
    Ok(Partition::from_vec(vec![total]))
}

/// A chain, then its smallest (or with `largest`, largest) element, if any.
///
/// # Errors
/// A step's failure.
pub(crate) fn extreme<T: Number>(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
    largest: bool,
) -> Result<Partition, TaskError> {
    extreme_combine::<T>(vec![plan.run(input, extras)?], largest)
}

/// The smallest (or largest) of partial extremes.
///
/// # Errors
/// When a part is not of `T`.
pub(crate) fn extreme_combine<T: Number>(parts: Vec<Partition>, largest: bool) -> Result<Partition, TaskError> {
    let mut best: Option<T> = None;
    for part in parts {
        for x in part.into_vec::<T>()? {
            best = Some(match best {
                Some(b) => {
                    let better = if largest { x > b } else { x < b };
                    if better { x } else { b }
                }
                None => x,
            });
        }
    }
    Ok(Partition::from_vec(best.into_iter().collect::<Vec<T>>()))
}

/// A chain, then count, mean and squared deviations of its elements.
///
/// # Errors
/// A step's failure.
pub(crate) fn moments<T: Number>(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
) -> Result<Partition, TaskError> {
    let mut m = Moments::default();
    for x in plan.run(input, extras)?.into_vec::<T>()? {
        m.push(x.to_f64());
    }
    Ok(Partition::from_vec(vec![m]))
}

/// Partial moments merged.
///
/// # Errors
/// When a part is not moments.
pub(crate) fn moments_combine(parts: Vec<Partition>) -> Result<Partition, TaskError> {
    let mut total = Moments::default();
    for part in parts {
        for m in part.into_vec::<Moments>()? {
            total.merge(&m);
        }
    }
    Ok(Partition::from_vec(vec![total]))
}

/// The `k` largest (or smallest) elements, in order.
fn best_k<T: Ordered>(mut items: Vec<T>, k: usize, largest: bool) -> Vec<T> {
    if largest {
        items.sort_unstable_by(|a, b| b.cmp(a));
    } else {
        items.sort_unstable();
    }
    items.truncate(k);
    items
}

/// A chain, then its `k` largest (or smallest) elements.
///
/// # Errors
/// A step's failure.
pub(crate) fn topk<T: Ordered>(
    plan: Arc<Plan>,
    input: Partition,
    extras: Vec<Partition>,
    k: usize,
    largest: bool,
) -> Result<Partition, TaskError> {
    Ok(Partition::from_vec(best_k(plan.run(input, extras)?.into_vec::<T>()?, k, largest)))
}

/// The `k` best of partial results.
///
/// # Errors
/// When a part is not of `T`.
pub(crate) fn topk_combine<T: Ordered>(parts: Vec<Partition>, k: usize, largest: bool) -> Result<Partition, TaskError> {
    let mut all = Vec::new();
    for part in parts {
        all.extend(part.into_vec::<T>()?);
    }
    Ok(Partition::from_vec(best_k(all, k, largest)))
}

type Input = (Arc<Plan>, Partition, Vec<Partition>);

shoal_graph::register_remote! {
    "literal" => (Partition,), literal;
    "run" => Input, run;
    "fold_partial" => (Arc<Plan>, Partition, Vec<Partition>, Func, Option<Partition>), fold_partial;
    "fold_combine" => (Func, Option<Partition>, Vec<Partition>), fold_combine;
    "reduce_partial" => (Arc<Plan>, Partition, Vec<Partition>, Func), reduce_partial;
    "reduce_combine" => (Func, Vec<Partition>), reduce_combine;
    "foldby_partial" => (Arc<Plan>, Partition, Vec<Partition>, Func, Func, Option<Partition>), foldby_partial;
    "foldby_combine" => (Func, Option<Partition>, Vec<Keyed>), foldby_combine;
    "keyed_pairs" => (Keyed,), keyed_pairs;
    "frequencies_partial" => Input, frequencies_partial;
    "frequencies_combine" => (Vec<Keyed>,), frequencies_combine;
    "frequencies_pairs" => (Keyed, bool), frequencies_pairs;
    "distinct_partial" => Input, distinct_partial;
    "distinct_combine" => (Vec<Partition>,), distinct_combine;
    "count" => Input, count;
    "count_combine" => (Vec<Partition>,), count_combine;
    "split" => (Arc<Plan>, Partition, Vec<Partition>, Func, usize), split;
    "bucket" => (Buckets, usize), bucket;
    "group" => (Vec<Bucket>,), group;
    "concat" => (Vec<Partition>,), concat;
    "slice" => (Partition, usize, usize), slice;
    "head" => (Partition, usize), head;
    "zip" => (Partition, Partition), zip;
    "product" => (Partition, Partition), product;
    "write_text" => (Arc<Plan>, Partition, Vec<Partition>, String), write_text;
    "moments_combine" => (Vec<Partition>,), moments_combine;
}

macro_rules! register_numbers {
    ($($t:ty),*) => {$(
        shoal_graph::register_remote! {
            concat!("sum<", stringify!($t), ">") => Input, sum::<$t>;
            concat!("sum_combine<", stringify!($t), ">") => (Vec<Partition>,), sum_combine::<$t>;
            concat!("extreme<", stringify!($t), ">") => (Arc<Plan>, Partition, Vec<Partition>, bool), extreme::<$t>;
            concat!("extreme_combine<", stringify!($t), ">") => (Vec<Partition>, bool), extreme_combine::<$t>;
            concat!("moments<", stringify!($t), ">") => Input, moments::<$t>;
        }
    )*};
}

register_numbers!(i64, i32, u64, u32, usize, f64, f32);

macro_rules! register_ordered {
    ($($t:ty),*) => {$(
        shoal_graph::register_remote! {
            concat!("topk<", stringify!($t), ">") => (Arc<Plan>, Partition, Vec<Partition>, usize, bool), topk::<$t>;
            concat!("topk_combine<", stringify!($t), ">") => (Vec<Partition>, usize, bool), topk_combine::<$t>;
        }
    )*};
}

register_ordered!(i64, i32, u64, u32, usize, String);
