//! The bag itself: partitions, the chain of steps waiting to run on them,
//! and turning that into tasks.

use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_client::{Client, Computable, Delayed, Future, TaskOptions, delayed_with};
use shoal_graph::partition::Partition;

use crate::BagError;
use crate::kernels;
use crate::step::{Func, Plan, Source, Step};

/// What a bag can hold: any value that serde can move and that can be
/// cloned.
pub trait Element: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Element for T {}

/// Where one partition starts.
#[derive(Clone)]
pub(crate) enum Base {
    Literal(Partition),
    Task(Delayed<Partition>),
    Range(i64, i64),
    Text(String),
}

/// A bag's partitions and the fusable steps still to run on them.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) bases: Vec<Base>,
    pub(crate) steps: Vec<Step>,
    /// Per step input beyond the first: one task per partition.
    pub(crate) extras: Vec<Vec<Delayed<Partition>>>,
    /// What the first tasks are called (`from_sequence`, `read_text`).
    pub(crate) source: String,
    /// The last operation, as the bag prints.
    pub(crate) name: String,
    pub(crate) split_every: usize,
    /// Why the bag cannot be computed, when an operation was given bad input.
    pub(crate) problem: Option<BagError>,
    /// The closures among its functions: fine on threads, not on a cluster.
    pub(crate) local_only: Vec<String>,
}

/// The first argument of a chain's task.
pub(crate) enum InputArg {
    Literal(Partition),
    Task(Delayed<Partition>),
}

/// One partition's chain, ready to become a task.
pub(crate) struct ChainTask {
    pub(crate) plan: Arc<Plan>,
    pub(crate) input: InputArg,
    pub(crate) extras: Vec<Delayed<Partition>>,
    pub(crate) name: String,
}

/// Calls a kernel whose first three parameters are a chain's task.
macro_rules! call_chain {
    ($opts:expr, $kernel:expr, $task:expr $(, $arg:expr)*) => {{
        let task = $task;
        match task.input {
            $crate::bag::InputArg::Literal(p) => {
                shoal_client::delayed_with($opts, $kernel, (task.plan, p, task.extras $(, $arg)*))
            }
            $crate::bag::InputArg::Task(d) => {
                shoal_client::delayed_with($opts, $kernel, (task.plan, d, task.extras $(, $arg)*))
            }
        }
    }};
}
pub(crate) use call_chain;

/// One task per partition: its chain, then `kernel` (with more arguments)
/// as the sink named `sink`.
macro_rules! per_partition {
    ($bag:expr, $sink:expr, $kernel:expr $(, $arg:expr)*) => {
        $bag.chain_tasks(Some($sink))
            .into_iter()
            .map(|t| {
                let o = $crate::bag::opts(&t.name);
                $crate::bag::call_chain!(&o, $kernel, t $(, $arg)*)
            })
            .collect::<Vec<_>>()
    };
}
pub(crate) use per_partition;

pub(crate) fn opts(name: &str) -> TaskOptions {
    TaskOptions::new().pure(true).name(name)
}

/// The default fan-in of tree reductions, as Dask's.
pub(crate) const SPLIT_EVERY: usize = 8;

/// A partitioned collection of values of type `T`, lazy like Dask's bag:
/// operations build a graph, and [`Bag::compute`] runs it on any executor.
/// Consecutive `map`, `filter`, `flat_map` and `map_partitions` steps run
/// as one task per partition.
///
/// On the threads executor any closure is a step; on a cluster steps are
/// `#[shoal::remote]` functions, found by name on the workers.
pub struct Bag<T> {
    pub(crate) chain: Arc<Chain>,
    _elements: PhantomData<fn() -> T>,
}

impl<T> Clone for Bag<T> {
    fn clone(&self) -> Bag<T> {
        Bag { chain: self.chain.clone(), _elements: PhantomData }
    }
}

impl<T> fmt::Display for Bag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shoal.bag<{}, npartitions={}>", self.chain.name, self.npartitions())
    }
}

impl<T> fmt::Debug for Bag<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<T> Bag<T> {
    pub(crate) fn from_chain(chain: Chain) -> Bag<T> {
        Bag { chain: Arc::new(chain), _elements: PhantomData }
    }

    /// A bag over `bases`, made by the operation `name`.
    pub(crate) fn from_bases(bases: Vec<Base>, name: &str) -> Bag<T> {
        Bag::from_chain(Chain {
            bases,
            steps: Vec::new(),
            extras: Vec::new(),
            source: name.to_string(),
            name: name.to_string(),
            split_every: SPLIT_EVERY,
            problem: None,
            local_only: Vec::new(),
        })
    }

    /// A bag over tasks made by `name` with `funcs`, keeping this bag's
    /// settings.
    pub(crate) fn then_tasks<U>(&self, tasks: Vec<Delayed<Partition>>, name: &str, funcs: &[&Func]) -> Bag<U> {
        let mut chain = Chain {
            bases: tasks.into_iter().map(Base::Task).collect(),
            steps: Vec::new(),
            extras: Vec::new(),
            source: name.to_string(),
            name: name.to_string(),
            split_every: self.chain.split_every,
            problem: self.chain.problem.clone(),
            local_only: self.local_only_with(funcs),
        };
        if chain.problem.is_some() {
            chain.bases.clear();
        }
        Bag::from_chain(chain)
    }

    /// The closures of this bag and of `funcs`.
    pub(crate) fn local_only_with(&self, funcs: &[&Func]) -> Vec<String> {
        let mut names = self.chain.local_only.clone();
        for f in funcs {
            if !f.is_remote() && !names.iter().any(|n| n == f.name()) {
                names.push(f.name().to_string());
            }
        }
        names
    }

    /// This bag, also using the closures of `other`.
    pub(crate) fn joining<U, V>(&self, other: &Bag<V>) -> Bag<U> {
        let mut chain = (*self.chain).clone();
        for name in &other.chain.local_only {
            if !chain.local_only.contains(name) {
                chain.local_only.push(name.clone());
            }
        }
        if chain.problem.is_none() {
            chain.problem = other.chain.problem.clone();
        }
        Bag::from_chain(chain)
    }

    /// This bag with one more fused step.
    pub(crate) fn with_step<U>(&self, step: Step) -> Bag<U> {
        let mut chain = (*self.chain).clone();
        chain.local_only = self.local_only_with(step.func().as_slice());
        chain.name = step.short_name();
        chain.steps.push(step);
        Bag::from_chain(chain)
    }

    /// This bag that cannot be computed, for the reason given.
    pub(crate) fn with_problem<U>(&self, problem: BagError) -> Bag<U> {
        let mut chain = (*self.chain).clone();
        chain.problem.get_or_insert(problem);
        Bag::from_chain(chain)
    }

    /// How many partitions it has.
    pub fn npartitions(&self) -> usize {
        self.chain.bases.len()
    }

    /// This bag with another fan-in for its tree reductions (`fold`,
    /// `foldby`, `frequencies`, …): how many partial results one task
    /// combines, at least 2 (Dask's `split_every`, 8 by default).
    pub fn split_every(&self, n: usize) -> Bag<T> {
        let mut chain = (*self.chain).clone();
        chain.split_every = n.max(2);
        Bag::from_chain(chain)
    }

    /// The error an operation left, or a closure a cluster cannot run.
    pub(crate) fn check(&self, client: &Client) -> Result<(), BagError> {
        check(self.chain.problem.as_ref(), &self.chain.local_only, client)
    }

    /// The chain of each partition, ready to be called by a kernel.
    pub(crate) fn chain_tasks(&self, sink: Option<&str>) -> Vec<ChainTask> {
        let chain = &self.chain;
        let mut name = chain.source.clone();
        for step in &chain.steps {
            name.push('-');
            name.push_str(&step.short_name());
        }
        if let Some(sink) = sink {
            name.push('-');
            name.push_str(sink);
        }
        let shared = Arc::new(Plan { source: Source::Input, steps: chain.steps.clone() });
        chain
            .bases
            .iter()
            .enumerate()
            .map(|(i, base)| {
                let (plan, input) = match base {
                    Base::Literal(p) => (shared.clone(), InputArg::Literal(p.clone())),
                    Base::Task(d) => (shared.clone(), InputArg::Task(d.clone())),
                    Base::Range(start, stop) => (
                        Arc::new(Plan {
                            source: Source::Range { start: *start, stop: *stop },
                            steps: chain.steps.clone(),
                        }),
                        InputArg::Literal(Partition::empty()),
                    ),
                    Base::Text(path) => (
                        Arc::new(Plan { source: Source::Text { path: path.clone() }, steps: chain.steps.clone() }),
                        InputArg::Literal(Partition::empty()),
                    ),
                };
                let extras = chain.extras.iter().map(|e| e[i].clone()).collect();
                ChainTask { plan, input, extras, name: name.clone() }
            })
            .collect()
    }

    /// One task per partition giving its elements (Dask's `to_delayed`):
    /// the fused chains, or the partitions themselves when nothing is left
    /// to run on them.
    pub fn to_delayed(&self) -> Vec<Delayed<Partition>> {
        let chain = &self.chain;
        if chain.steps.is_empty() && chain.bases.iter().all(|b| matches!(b, Base::Task(_))) {
            return chain
                .bases
                .iter()
                .filter_map(|b| match b {
                    Base::Task(d) => Some(d.clone()),
                    _ => None,
                })
                .collect();
        }
        self.chain_tasks(None)
            .into_iter()
            .map(|task| {
                let o = opts(&task.name);
                call_chain!(&o, kernels::run, task)
            })
            .collect()
    }

    /// Starts computing the bag on `client` and returns a bag backed by the
    /// results, which stay on the workers (Dask's `persist`).
    ///
    /// # Errors
    /// An error an operation left, or the graph could not be submitted.
    pub fn persist(&self, client: &Client) -> Result<Bag<T>, BagError> {
        self.check(client)?;
        let futures = shoal_client::persist(&self.to_delayed(), client)?;
        Ok(from_futures_named(futures, &self.chain.name))
    }

    /// The task graph in Graphviz DOT, after fusion: what runs.
    pub fn to_dot(&self) -> String {
        let mut all = shoal_graph::Graph::new();
        for task in self.to_delayed() {
            for t in task.graph().into_tasks() {
                all.insert(t);
            }
        }
        all.to_dot()
    }

    /// Writes a picture of the task graph: DOT for `.dot`, else rendered
    /// by Graphviz (`.svg`, `.png`, `.pdf`).
    ///
    /// # Errors
    /// The file could not be written or rendered.
    pub fn visualize(&self, path: impl AsRef<Path>) -> Result<(), shoal_graph::VisualizeError> {
        shoal_graph::write_dot(&self.to_dot(), path.as_ref())
    }
}

impl<T: Element> Bag<T> {
    /// Computes the bag on the current client ([`Client::current`]) into a
    /// `Vec`, partitions in order.
    ///
    /// ```
    /// let doubled = shoal_bag::from_sequence(0..10i64).map(|x| x * 2);
    /// assert_eq!(doubled.compute()?, vec![0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    ///
    /// # Errors
    /// An error an operation left, or the first task that failed.
    pub fn compute(&self) -> Result<Vec<T>, BagError> {
        self.compute_with(&Client::current())
    }

    /// Computes the bag on `client` into a `Vec`.
    ///
    /// # Errors
    /// An error an operation left, or the first task that failed.
    pub fn compute_with(&self, client: &Client) -> Result<Vec<T>, BagError> {
        self.check(client)?;
        let parts = self.to_delayed().compute_on(client)?;
        let mut out = Vec::with_capacity(parts.iter().map(Partition::len).sum());
        for part in parts {
            out.extend(part.into_vec::<T>().map_err(BagError::Element)?);
        }
        Ok(out)
    }

    /// The first `n` elements, computing only the partitions they are in,
    /// one after another, on the current client.
    ///
    /// ```
    /// let first = shoal_bag::range(1_000_000, 100).map(|x| x + 1).take(3)?;
    /// assert_eq!(first, vec![1, 2, 3]);
    /// # Ok::<(), shoal_bag::BagError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Bag::compute`].
    pub fn take(&self, n: usize) -> Result<Vec<T>, BagError> {
        self.take_with(n, &Client::current())
    }

    /// [`Bag::take`] on `client`.
    ///
    /// # Errors
    /// As [`Bag::compute`].
    pub fn take_with(&self, n: usize, client: &Client) -> Result<Vec<T>, BagError> {
        self.check(client)?;
        let mut out = Vec::new();
        for part in self.to_delayed() {
            if out.len() >= n {
                break;
            }
            let first = delayed_with(&opts("take"), kernels::head, (part, n - out.len()));
            out.extend(first.compute_with(client)?.into_vec::<T>().map_err(BagError::Element)?);
        }
        Ok(out)
    }
}

/// The error an operation left, or a closure a cluster cannot run.
pub(crate) fn check(problem: Option<&BagError>, local_only: &[String], client: &Client) -> Result<(), BagError> {
    if let Some(p) = problem {
        return Err(p.clone());
    }
    match (client.executor(), local_only.first()) {
        (shoal_client::Executor::Cluster(_), Some(name)) => Err(BagError::NotRemote { function: name.clone() }),
        _ => Ok(()),
    }
}

/// A bag of `items` cut as Dask cuts it: in partitions of one element up
/// to 100 elements, else in about 100 partitions.
///
/// ```
/// let b = shoal_bag::from_sequence(0..10);
/// assert_eq!(b.to_string(), "shoal.bag<from_sequence, npartitions=10>");
/// ```
pub fn from_sequence<T: Element>(items: impl IntoIterator<Item = T>) -> Bag<T> {
    let items: Vec<T> = items.into_iter().collect();
    let size = if items.len() <= 100 { 1 } else { items.len().div_ceil(100) };
    from_sequence_partition_size(items, size)
}

/// A bag of `items` in `npartitions` partitions of near-equal sizes
/// (some empty when there are fewer items).
pub fn from_sequence_npartitions<T: Element>(items: impl IntoIterator<Item = T>, npartitions: usize) -> Bag<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    let n = npartitions.max(1);
    let len = items.len();
    let mut parts = Vec::with_capacity(n);
    for i in (0..n).rev() {
        let start = len * i / n;
        parts.push(Base::Literal(Partition::from_vec(items.split_off(start))));
    }
    parts.reverse();
    Bag::from_bases(parts, "from_sequence")
}

/// A bag of `items` in partitions of `partition_size` elements.
pub fn from_sequence_partition_size<T: Element>(items: impl IntoIterator<Item = T>, partition_size: usize) -> Bag<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    let size = partition_size.max(1);
    let mut parts = Vec::new();
    while items.len() > size {
        let rest = items.split_off(size);
        parts.push(Base::Literal(Partition::from_vec(std::mem::replace(&mut items, rest))));
    }
    if !items.is_empty() || parts.is_empty() {
        parts.push(Base::Literal(Partition::from_vec(items)));
    }
    Bag::from_bases(parts, "from_sequence")
}

/// The integers `0..n` in `npartitions` partitions, made on the workers.
pub fn range(n: i64, npartitions: usize) -> Bag<i64> {
    let parts = npartitions.max(1) as i64;
    let n = n.max(0);
    let bases = (0..parts).map(|i| Base::Range(n * i / parts, n * (i + 1) / parts)).collect();
    Bag::from_bases(bases, "range")
}

/// The lines of text files, one partition per file, read on the workers
/// (Dask's `read_text`): `pattern` is a path or a glob; files ending in
/// `.gz` are gzip, `.zst` zstd. The client only lists the files.
///
/// # Errors
/// [`BagError::Pattern`] for a malformed glob, [`BagError::NoFiles`] when
/// it matches no file.
pub fn from_text_files(pattern: &str) -> Result<Bag<String>, BagError> {
    let files = crate::text::expand(pattern)?;
    let bases = files.into_iter().map(|p| Base::Text(p.to_string_lossy().into_owned())).collect();
    Ok(Bag::from_bases(bases, "read_text"))
}

/// A bag whose partitions are the results of delayed calls, each a
/// [`Partition`] (make one with [`Partition::from_vec`]).
pub fn from_delayed<T: Element>(parts: Vec<Delayed<Partition>>) -> Bag<T> {
    Bag::from_bases(parts.into_iter().map(Base::Task).collect(), "from_delayed")
}

/// A bag whose partitions are computed or computing futures, each a
/// [`Partition`].
pub fn from_futures<T: Element>(parts: Vec<Future<Partition>>) -> Bag<T> {
    from_futures_named(parts, "from_futures")
}

fn from_futures_named<T>(parts: Vec<Future<Partition>>, name: &str) -> Bag<T> {
    let o = opts(name);
    let bases = parts.iter().map(|f| Base::Task(delayed_with(&o, kernels::literal, (f,)))).collect();
    Bag::from_bases(bases, name)
}
