//! What can be done to a bag: steps fused into its tasks, reductions as
//! trees, shuffles, and combining bags.

use std::sync::Arc;

use shoal_client::{Client, Delayed, delayed_with};
use shoal_graph::TaskOutput;
use shoal_graph::elements::Elements;
use shoal_graph::partition::Partition;

use crate::BagError;
use crate::bag::{Bag, Element, call_chain, opts, per_partition};
use crate::kernels::{self, Keyed};
use crate::number::{Moments, Number, Ordered};
use crate::step::{Func, Step};

/// A single value a bag reduces to (Dask's `Item`): lazy until computed.
pub struct Item<T> {
    task: Delayed<Partition>,
    problem: Option<BagError>,
    local_only: Vec<String>,
    finish: Arc<dyn Fn(Partition) -> Result<T, BagError> + Send + Sync>,
}

impl<T> Clone for Item<T> {
    fn clone(&self) -> Item<T> {
        Item {
            task: self.task.clone(),
            problem: self.problem.clone(),
            local_only: self.local_only.clone(),
            finish: self.finish.clone(),
        }
    }
}

impl<T> Item<T> {
    /// Computes the value on the current client.
    ///
    /// # Errors
    /// An error the bag's operations left, the first task that failed, or
    /// nothing to reduce (the `max` of an empty bag).
    pub fn compute(&self) -> Result<T, BagError> {
        self.compute_with(&Client::current())
    }

    /// Computes the value on `client`.
    ///
    /// # Errors
    /// As [`Item::compute`].
    pub fn compute_with(&self, client: &Client) -> Result<T, BagError> {
        crate::bag::check(self.problem.as_ref(), &self.local_only, client)?;
        (self.finish)(self.task.compute_with(client)?)
    }

    /// The task that makes the value: a partition of one element.
    pub fn to_delayed(&self) -> Delayed<Partition> {
        self.task.clone()
    }
}

/// The one value of a reduction's last partition.
fn single<T: Element>(operation: &'static str) -> impl Fn(Partition) -> Result<T, BagError> + Send + Sync {
    move |p: Partition| {
        p.into_vec::<T>().map_err(BagError::Element)?.into_iter().next().ok_or(BagError::Empty { operation })
    }
}

/// Combines `parts` level by level, `split_every` at a time, down to one.
fn tree<R>(
    mut parts: Vec<Delayed<R>>,
    split_every: usize,
    mut combine: impl FnMut(Vec<Delayed<R>>) -> Delayed<R>,
) -> Delayed<R> {
    loop {
        if parts.len() <= split_every {
            return combine(parts);
        }
        parts = parts.chunks(split_every).map(|group| combine(group.to_vec())).collect();
    }
}

impl<T: Element> Bag<T> {
    /// Applies `f` to every element.
    ///
    /// ```
    /// let lengths = shoal_bag::from_sequence(["a", "bb"].map(String::from)).map(|s: String| s.len());
    /// assert_eq!(lengths.compute()?, vec![1, 2]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn map<U, Out, F>(&self, f: F) -> Bag<U>
    where
        U: Element,
        Out: TaskOutput<Ok = U>,
        F: Fn(T) -> Out + Send + Sync + 'static,
    {
        self.with_step(Step::Map(Func::new::<F>(Elements::unary::<T, Out, F>(f))))
    }

    /// Keeps the elements for which `f` is true.
    pub fn filter<Out, F>(&self, f: F) -> Bag<T>
    where
        Out: TaskOutput<Ok = bool>,
        F: Fn(T) -> Out + Send + Sync + 'static,
    {
        self.with_step(Step::Filter(Func::new::<F>(Elements::unary::<T, Out, F>(f))))
    }

    /// Applies `f`, which gives a `Vec` per element, and joins the `Vec`s
    /// (Dask's `map(f).flatten()`).
    pub fn flat_map<U, F>(&self, f: F) -> Bag<U>
    where
        U: Element,
        F: Fn(T) -> Vec<U> + Send + Sync + 'static,
    {
        self.with_step(Step::FlatMap(Func::new::<F>(Elements::flat_map_of::<T, U, F>(f))))
    }

    /// Applies `f` to each whole partition, as a `Vec`.
    pub fn map_partitions<U, Out, F>(&self, f: F) -> Bag<U>
    where
        U: Element,
        Out: TaskOutput<Ok = Vec<U>>,
        F: Fn(Vec<T>) -> Out + Send + Sync + 'static,
    {
        self.with_step(Step::MapPartitions(Func::new::<F>(Elements::map_partitions_of::<T, U, Out, F>(f))))
    }

    /// Applies `f` to every element and the element at the same position of
    /// `other` (Dask's `map(f, b, other)`); the bags must be partitioned
    /// alike.
    pub fn map_with<B, U, Out, F>(&self, f: F, other: &Bag<B>) -> Bag<U>
    where
        B: Element,
        U: Element,
        Out: TaskOutput<Ok = U>,
        F: Fn(T, B) -> Out + Send + Sync + 'static,
    {
        if self.npartitions() != other.npartitions() {
            return self.with_problem(BagError::Partitions {
                operation: "map_with",
                left: self.npartitions(),
                right: other.npartitions(),
            });
        }
        let mut bag: Bag<U> = self.joining::<T, B>(other).with_extra(other.to_delayed());
        let step = Step::MapWith {
            func: Func::new::<F>(Elements::binary::<T, B, Out, F>(f)),
            extra: bag.chain.extras.len() - 1,
            broadcast: false,
        };
        bag = bag.with_step(step);
        bag
    }

    /// Applies `f` to every element and the same `value` (Dask's
    /// `map(f, b, value)`).
    ///
    /// ```
    /// fn scale(x: i64, by: i64) -> i64 { x * by }
    /// let b = shoal_bag::range(4, 2).map_value(scale, 10);
    /// assert_eq!(b.compute()?, vec![0, 10, 20, 30]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn map_value<B, U, Out, F>(&self, f: F, value: B) -> Bag<U>
    where
        B: Element,
        U: Element,
        Out: TaskOutput<Ok = U>,
        F: Fn(T, B) -> Out + Send + Sync + 'static,
    {
        let literal = delayed_with(&opts("value"), kernels::literal, (Partition::from_vec(vec![value]),));
        let bag: Bag<U> = self.with_extra(vec![literal; self.npartitions()]);
        let step = Step::MapWith {
            func: Func::new::<F>(Elements::binary::<T, B, Out, F>(f)),
            extra: bag.chain.extras.len() - 1,
            broadcast: true,
        };
        bag.with_step(step)
    }

    fn with_extra<U>(&self, tasks: Vec<Delayed<Partition>>) -> Bag<U> {
        let mut chain = (*self.chain).clone();
        chain.extras.push(tasks);
        Bag::from_chain(chain)
    }

    /// Folds the elements: `binop(accumulator, element)` within each
    /// partition, from `initial` or else from the partition's first
    /// element, then `combine(accumulator, accumulator)` over the partial
    /// results as a tree.
    ///
    /// ```
    /// fn add(a: i64, b: i64) -> i64 { a + b }
    /// fn longest(acc: usize, s: String) -> usize { acc.max(s.len()) }
    /// fn max(a: usize, b: usize) -> usize { a.max(b) }
    /// assert_eq!(shoal_bag::range(101, 7).fold(add, add, None).compute()?, 5050);
    /// let words = shoal_bag::from_sequence(["a", "abc", "ab"].map(String::from));
    /// assert_eq!(words.fold(longest, max, Some(0)).compute()?, 3);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn fold<A, O1, O2, F, G>(&self, binop: F, combine: G, initial: Option<A>) -> Item<A>
    where
        A: Element,
        O1: TaskOutput<Ok = A>,
        O2: TaskOutput<Ok = A>,
        F: Fn(A, T) -> O1 + Send + Sync + 'static,
        G: Fn(A, A) -> O2 + Send + Sync + 'static,
    {
        let binop = Func::new::<F>(Elements::binary::<A, T, O1, F>(binop));
        let combine = Func::new::<G>(Elements::binary::<A, A, O2, G>(combine));
        let init = initial.map(|a| Partition::from_vec(vec![a]));
        let partials: Vec<Delayed<Partition>> =
            per_partition!(self, "fold", kernels::fold_partial, binop.clone(), init.clone());
        let o = opts("fold-combine");
        let top = tree(partials, self.chain.split_every, |group| {
            delayed_with(&o, kernels::fold_combine, (combine.clone(), None::<Partition>, group))
        });
        self.item(top, &[&binop, &combine], single::<A>("fold"))
    }

    /// Reduces each partition with `perpartition` (a function of the
    /// partition's `Vec`), then the partial results with `aggregate`, as a
    /// tree (Dask's `reduction`).
    ///
    /// ```
    /// fn total(xs: Vec<i64>) -> i64 { xs.iter().sum() }
    /// assert_eq!(shoal_bag::range(10, 3).reduction(total, total).compute()?, 45);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn reduction<R, O1, O2, P, G>(&self, perpartition: P, aggregate: G) -> Item<R>
    where
        R: Element,
        O1: TaskOutput<Ok = R>,
        O2: TaskOutput<Ok = R>,
        P: Fn(Vec<T>) -> O1 + Send + Sync + 'static,
        G: Fn(Vec<R>) -> O2 + Send + Sync + 'static,
    {
        let per = Func::new::<P>(Elements::partition_of::<T, O1, P>(perpartition));
        let agg = Func::new::<G>(Elements::partition_of::<R, O2, G>(aggregate));
        let partials: Vec<Delayed<Partition>> = per_partition!(self, "reduction", kernels::reduce_partial, per.clone());
        let o = opts("reduction-aggregate");
        let top = tree(partials, self.chain.split_every, |group| {
            delayed_with(&o, kernels::reduce_combine, (agg.clone(), group))
        });
        self.item(top, &[&per, &agg], single::<R>("reduction"))
    }

    fn item<R>(
        &self,
        task: Delayed<Partition>,
        funcs: &[&Func],
        finish: impl Fn(Partition) -> Result<R, BagError> + Send + Sync + 'static,
    ) -> Item<R> {
        Item {
            task,
            problem: self.chain.problem.clone(),
            local_only: self.local_only_with(funcs),
            finish: Arc::new(finish),
        }
    }

    /// Folds the elements of each key (`key(element)`) with `binop`, from
    /// `initial` or else from the key's first element, then merges the
    /// partial folds of equal keys with `combine`: a bag of `(key, value)`
    /// in one partition. Within a partition the fold runs right after the
    /// partition's steps, so only one value per key leaves it.
    ///
    /// ```
    /// fn parity(x: i64) -> i64 { x % 2 }
    /// fn add(a: i64, b: i64) -> i64 { a + b }
    /// let mut sums = shoal_bag::range(10, 3).foldby(parity, add, None, add).compute()?;
    /// sums.sort();
    /// assert_eq!(sums, vec![(0, 20), (1, 25)]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn foldby<K, A, O1, O2, O3, KF, F, G>(&self, key: KF, binop: F, initial: Option<A>, combine: G) -> Bag<(K, A)>
    where
        K: Element,
        A: Element,
        O1: TaskOutput<Ok = K>,
        O2: TaskOutput<Ok = A>,
        O3: TaskOutput<Ok = A>,
        KF: Fn(T) -> O1 + Send + Sync + 'static,
        F: Fn(A, T) -> O2 + Send + Sync + 'static,
        G: Fn(A, A) -> O3 + Send + Sync + 'static,
    {
        let key = Func::new::<KF>(Elements::unary::<T, O1, KF>(key));
        let binop = Func::new::<F>(Elements::binary::<A, T, O2, F>(binop));
        let combine = Func::new::<G>(Elements::binary::<A, A, O3, G>(combine));
        let init = initial.map(|a| Partition::from_vec(vec![a]));
        let partials: Vec<Delayed<Keyed>> =
            per_partition!(self, "foldby", kernels::foldby_partial, key.clone(), binop.clone(), init.clone());
        let o = opts("foldby-combine");
        let top = tree(partials, self.chain.split_every, |group| {
            delayed_with(&o, kernels::foldby_combine, (combine.clone(), None::<Partition>, group))
        });
        let pairs = delayed_with(&opts("foldby-aggregate"), kernels::keyed_pairs, (top,));
        self.then_tasks(vec![pairs], "foldby", &[&key, &binop, &combine])
    }

    /// Groups the elements by `key(element)` with a shuffle: a bag of
    /// `(key, elements)` in as many partitions as this one. Each partition
    /// is cut by key hash where it is, and each output partition gathers
    /// its pieces straight from the workers that hold them.
    ///
    /// ```
    /// fn parity(x: i64) -> i64 { x % 2 }
    /// let mut groups = shoal_bag::range(6, 3).groupby(parity).compute()?;
    /// groups.sort();
    /// assert_eq!(groups, vec![(0, vec![0, 2, 4]), (1, vec![1, 3, 5])]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn groupby<K, Out, KF>(&self, key: KF) -> Bag<(K, Vec<T>)>
    where
        K: Element,
        Out: TaskOutput<Ok = K>,
        KF: Fn(T) -> Out + Send + Sync + 'static,
    {
        let n = self.npartitions();
        self.groupby_into(key, n)
    }

    /// [`Bag::groupby`] into `npartitions` output partitions.
    pub fn groupby_into<K, Out, KF>(&self, key: KF, npartitions: usize) -> Bag<(K, Vec<T>)>
    where
        K: Element,
        Out: TaskOutput<Ok = K>,
        KF: Fn(T) -> Out + Send + Sync + 'static,
    {
        let key = Func::new::<KF>(Elements::unary::<T, Out, KF>(key));
        let n = npartitions.max(1);
        let splits: Vec<Delayed<kernels::Buckets>> = per_partition!(self, "split", kernels::split, key.clone(), n);
        let o = opts("shuffle-bucket");
        let g = opts("groupby");
        let groups = (0..n)
            .map(|j| {
                let pieces: Vec<Delayed<kernels::Bucket>> =
                    splits.iter().map(|s| delayed_with(&o, kernels::bucket, (s, j))).collect();
                delayed_with(&g, kernels::group, (pieces,))
            })
            .collect();
        self.then_tasks(groups, "groupby", &[&key])
    }

    /// How often each distinct element occurs: a bag of `(element, count)`
    /// in one partition, most frequent first when `sort`. Equal elements
    /// are those with equal serde encodings.
    ///
    /// ```
    /// let words = shoal_bag::from_sequence(["a", "b", "a"].map(String::from));
    /// assert_eq!(words.frequencies(true).compute()?, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn frequencies(&self, sort: bool) -> Bag<(T, u64)> {
        let partials: Vec<Delayed<Keyed>> = per_partition!(self, "frequencies", kernels::frequencies_partial);
        let o = opts("frequencies-combine");
        let top =
            tree(partials, self.chain.split_every, |group| delayed_with(&o, kernels::frequencies_combine, (group,)));
        let pairs = delayed_with(&opts("frequencies-aggregate"), kernels::frequencies_pairs, (top, sort));
        self.then_tasks(vec![pairs], "frequencies", &[])
    }

    /// The distinct elements, first occurrence first, in one partition.
    pub fn distinct(&self) -> Bag<T> {
        let partials: Vec<Delayed<Partition>> = per_partition!(self, "distinct", kernels::distinct_partial);
        let o = opts("distinct-aggregate");
        let top = tree(partials, self.chain.split_every, |group| delayed_with(&o, kernels::distinct_combine, (group,)));
        self.then_tasks(vec![top], "distinct", &[])
    }

    /// How many elements.
    pub fn count(&self) -> Item<u64> {
        let partials: Vec<Delayed<Partition>> = per_partition!(self, "count", kernels::count);
        let o = opts("count-aggregate");
        let top = tree(partials, self.chain.split_every, |group| delayed_with(&o, kernels::count_combine, (group,)));
        self.item(top, &[], single::<u64>("count"))
    }

    /// Pairs of the elements at equal positions of this bag and `other`,
    /// which must be partitioned alike.
    pub fn zip<U: Element>(&self, other: &Bag<U>) -> Bag<(T, U)> {
        if self.npartitions() != other.npartitions() {
            return self.with_problem(BagError::Partitions {
                operation: "zip",
                left: self.npartitions(),
                right: other.npartitions(),
            });
        }
        let o = opts("zip");
        let tasks = self
            .to_delayed()
            .into_iter()
            .zip(other.to_delayed())
            .map(|(a, b)| delayed_with(&o, kernels::zip, (a, b)))
            .collect();
        self.joining::<T, U>(other).then_tasks(tasks, "zip", &[])
    }

    /// Every pair of an element of this bag and one of `other`, in a
    /// partition per pair of partitions.
    pub fn product<U: Element>(&self, other: &Bag<U>) -> Bag<(T, U)> {
        let o = opts("product");
        let right = other.to_delayed();
        let mut tasks = Vec::new();
        for a in self.to_delayed() {
            for b in &right {
                tasks.push(delayed_with(&o, kernels::product, (&a, b)));
            }
        }
        self.joining::<T, U>(other).then_tasks(tasks, "product", &[])
    }

    /// The same elements in `npartitions` partitions: neighbouring
    /// partitions joined, or each cut into near-equal pieces.
    pub fn repartition(&self, npartitions: usize) -> Bag<T> {
        let n = npartitions.max(1);
        let parts = self.to_delayed();
        let m = parts.len();
        let tasks = if n <= m {
            let o = opts("repartition-concat");
            (0..n).map(|i| delayed_with(&o, kernels::concat, (parts[m * i / n..m * (i + 1) / n].to_vec(),))).collect()
        } else {
            let o = opts("repartition-split");
            (0..n)
                .map(|i| {
                    // Output i is piece i - first(source) of its source partition.
                    let source = i * m / n;
                    let first = (source * n).div_ceil(m);
                    let pieces = ((source + 1) * n).div_ceil(m) - first;
                    delayed_with(&o, kernels::slice, (&parts[source], i - first, pieces))
                })
                .collect()
        };
        self.then_tasks(tasks, "repartition", &[])
    }
}

impl<T: Element + Number> Bag<T> {
    /// The sum of the elements.
    ///
    /// ```
    /// assert_eq!(shoal_bag::range(100, 4).sum().compute()?, 4950);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn sum(&self) -> Item<T> {
        let partials: Vec<Delayed<Partition>> = per_partition!(self, "sum", kernels::sum::<T>);
        let o = opts("sum-aggregate");
        let top = tree(partials, self.chain.split_every, |group| delayed_with(&o, kernels::sum_combine::<T>, (group,)));
        self.item(top, &[], single::<T>("sum"))
    }

    fn extreme(&self, largest: bool) -> Item<T> {
        let name = if largest { "max" } else { "min" };
        let partials: Vec<Delayed<Partition>> = per_partition!(self, name, kernels::extreme::<T>, largest);
        let o = opts(&format!("{name}-aggregate"));
        let top = tree(partials, self.chain.split_every, |group| {
            delayed_with(&o, kernels::extreme_combine::<T>, (group, largest))
        });
        self.item(top, &[], single::<T>(name))
    }

    /// The smallest element; an error for an empty bag.
    pub fn min(&self) -> Item<T> {
        self.extreme(false)
    }

    /// The largest element; an error for an empty bag.
    pub fn max(&self) -> Item<T> {
        self.extreme(true)
    }

    fn moments(
        &self,
        name: &'static str,
        finish: impl Fn(Moments) -> Option<f64> + Send + Sync + 'static,
    ) -> Item<f64> {
        let partials: Vec<Delayed<Partition>> = per_partition!(self, name, kernels::moments::<T>);
        let o = opts(&format!("{name}-aggregate"));
        let top = tree(partials, self.chain.split_every, |group| delayed_with(&o, kernels::moments_combine, (group,)));
        let moments = single::<Moments>(name);
        self.item(top, &[], move |p| finish(moments(p)?).ok_or(BagError::Empty { operation: name }))
    }

    /// The mean of the elements.
    ///
    /// ```
    /// assert_eq!(shoal_bag::range(5, 2).mean().compute()?, 2.0);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn mean(&self) -> Item<f64> {
        self.moments("mean", |m| (m.count > 0).then_some(m.mean))
    }

    /// The variance, with `ddof` degrees of freedom taken off (0 for the
    /// population's, as Dask's default).
    pub fn var(&self, ddof: u64) -> Item<f64> {
        self.moments("var", move |m| m.variance(ddof))
    }

    /// The standard deviation, with `ddof` as in [`Bag::var`].
    pub fn std(&self, ddof: u64) -> Item<f64> {
        self.moments("std", move |m| m.variance(ddof).map(f64::sqrt))
    }
}

impl<T: Element + Ordered> Bag<T> {
    /// The `k` largest elements, largest first, in one partition.
    ///
    /// ```
    /// assert_eq!(shoal_bag::range(100, 7).topk(3).compute()?, vec![99, 98, 97]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn topk(&self, k: usize) -> Bag<T> {
        let partials: Vec<Delayed<Partition>> = per_partition!(self, "topk", kernels::topk::<T>, k, true);
        let o = opts("topk-aggregate");
        let top = tree(partials, self.chain.split_every, |group| {
            delayed_with(&o, kernels::topk_combine::<T>, (group, k, true))
        });
        self.then_tasks(vec![top], "topk", &[])
    }
}

impl Bag<String> {
    /// Each string split at whitespace, the words in one bag (Dask's
    /// `.str.split().flatten()`). Followed by `frequencies`, the words are
    /// counted where they lie in their lines, never copied out.
    ///
    /// ```
    /// let lines = shoal_bag::from_sequence(["a b", " b  c "].map(String::from));
    /// assert_eq!(lines.split_whitespace().compute()?, ["a", "b", "b", "c"]);
    /// let counts = lines.split_whitespace().frequencies(true).compute()?;
    /// assert_eq!(counts[0], ("b".to_string(), 2));
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    pub fn split_whitespace(&self) -> Bag<String> {
        self.with_step(Step::SplitWhitespace)
    }

    /// Writes each partition to a text file, one element per line, and
    /// returns the paths written. `pattern` has a `*` that becomes the
    /// partition's number (`out/part-*.txt.gz`; `.gz` and `.zst` compress),
    /// or is a directory that gets `0.part`, `1.part`, …. The files are
    /// written by the workers.
    ///
    /// # Errors
    /// As [`Bag::compute`], or a file could not be written.
    pub fn to_text_files(&self, pattern: &str) -> Result<Vec<String>, BagError> {
        self.to_text_files_with(pattern, &Client::current())
    }

    /// [`Bag::to_text_files`] on `client`.
    ///
    /// # Errors
    /// As [`Bag::to_text_files`].
    pub fn to_text_files_with(&self, pattern: &str, client: &Client) -> Result<Vec<String>, BagError> {
        self.check(client)?;
        let paths: Vec<String> = (0..self.npartitions()).map(|i| crate::text::output_path(pattern, i)).collect();
        let writes: Vec<Delayed<u64>> = self
            .chain_tasks(Some("to_text_files"))
            .into_iter()
            .zip(&paths)
            .map(|(t, path)| {
                let o = opts(&t.name);
                call_chain!(&o, kernels::write_text, t, path.clone())
            })
            .collect();
        shoal_client::Computable::compute_on(&writes, client)?;
        Ok(paths)
    }
}
