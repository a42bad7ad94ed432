//! Lazy task graphs: build with [`delayed`], run with [`Delayed::compute`].

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use shoal_graph::{Arg, Graph, Key, Task, TaskFn, VisualizeError};

use crate::args::{ArgContext, IntoArg, IntoArgs};
use shoal_local::Submission;

use crate::client::{Backend, Client, Lazy, build_call};
use crate::error::Error;
use crate::future::FutureHandle;
use crate::future::{Future, outcome_value};
use crate::options::{Placement, TaskOptions};
use crate::progress;

/// A lazy call: nothing runs until [`Delayed::compute`] (or
/// [`compute`](crate::compute) of several).
///
/// Delayed values are arguments of further `delayed` calls; together they form
/// a graph. Computing runs each task of the graph once, in parallel where the
/// graph allows, and frees each intermediate result as soon as its last
/// dependent has run.
///
/// ```
/// use shoal_client::{delayed, Client};
/// fn inc(x: i64) -> i64 { x + 1 }
/// fn add(a: i64, b: i64) -> i64 { a + b }
/// let client = Client::threads().unwrap();
/// let x = delayed(inc, (1,));
/// let y = delayed(inc, (2,));
/// let total = delayed(add, (&x, &y));
/// assert_eq!(total.compute_with(&client).unwrap(), 5);
/// ```
pub struct Delayed<T> {
    node: Arc<DelayedNode>,
    _result: PhantomData<fn() -> T>,
}

pub(crate) struct DelayedNode {
    task: Task,
    retries: u32,
    /// Priority, resources and restrictions, for clusters.
    placement: Option<Arc<Placement>>,
    /// The delayed values and futures the task's arguments refer to.
    deps: Vec<Arc<dyn Any + Send + Sync>>,
}

impl DelayedNode {
    pub(crate) fn new(task: Task, retries: u32, deps: Vec<Arc<dyn Any + Send + Sync>>) -> DelayedNode {
        DelayedNode { task, retries, placement: None, deps }
    }
}

impl Drop for DelayedNode {
    /// Drops a long chain of delayed values iteratively: the default recursive
    /// drop would overflow the stack on a chain of a hundred thousand.
    fn drop(&mut self) {
        let mut stack = std::mem::take(&mut self.deps);
        while let Some(dep) = stack.pop() {
            if let Ok(node) = dep.downcast::<DelayedNode>()
                && let Some(mut node) = Arc::into_inner(node)
            {
                stack.append(&mut node.deps);
            }
        }
    }
}

/// A lazy call of `f` on `args` (a tuple; values, delayed values or futures).
///
/// Like Dask's `delayed`, every call gets a fresh key unless made pure with
/// [`delayed_with`] and [`TaskOptions::pure`].
pub fn delayed<P, F, A>(f: F, args: A) -> Delayed<F::Output>
where
    F: TaskFn<P>,
    A: IntoArgs<P>,
{
    delayed_with(&TaskOptions::default(), f, args)
}

/// [`delayed`] with options: purity (content-based keys), retries, name, and
/// on a cluster priority, resources and worker restrictions.
pub fn delayed_with<P, F, A>(opts: &TaskOptions, f: F, args: A) -> Delayed<F::Output>
where
    F: TaskFn<P>,
    A: IntoArgs<P>,
{
    let (task, cx) = build_call(f, args, opts, Lazy::Yes);
    let node = DelayedNode { task, retries: opts.retries, placement: opts.placement(), deps: cx.keep_alive };
    Delayed { node: Arc::new(node), _result: PhantomData }
}

impl<T> Clone for Delayed<T> {
    fn clone(&self) -> Delayed<T> {
        Delayed { node: self.node.clone(), _result: PhantomData }
    }
}

impl<T> fmt::Display for Delayed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Delayed('{}')", self.key())
    }
}

impl<T> fmt::Debug for Delayed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<T> Delayed<T> {
    pub(crate) fn node(&self) -> &Arc<DelayedNode> {
        &self.node
    }

    /// The key of this call's result.
    pub fn key(&self) -> &Key {
        &self.node.task.key
    }

    /// The graph of tasks this value needs (itself included).
    pub fn graph(&self) -> Graph {
        collect(&[&self.node])
    }

    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        self.graph().to_dot()
    }

    /// Writes a picture of the graph: DOT for `.dot`, else rendered with
    /// Graphviz (`.svg`, `.png`, `.pdf`).
    ///
    /// # Errors
    /// When the file cannot be written or `dot` is missing or fails.
    pub fn visualize(&self, path: impl AsRef<Path>) -> Result<(), VisualizeError> {
        shoal_graph::write_dot(&self.to_dot(), path.as_ref())
    }
}

impl<T: Clone + Send + Sync + 'static> Delayed<T> {
    /// Runs the graph on the current client ([`Client::current`]) and returns
    /// the result.
    ///
    /// # Errors
    /// The failure of this task or of one it needs.
    pub fn compute(&self) -> Result<T, Error> {
        self.compute_with(&Client::current())
    }

    /// Runs the graph on `client` and returns the result.
    ///
    /// # Errors
    /// The failure of this task or of one it needs.
    pub fn compute_with(&self, client: &Client) -> Result<T, Error> {
        let handles = run(client, &[&self.node])?;
        handles.into_iter().next().map_or_else(|| unreachable!("one output handle per requested key"), |h| value_of(&h))
    }

    /// Starts the graph on `client` and returns the future of the result,
    /// keeping it there (Dask's `persist`, `client.compute`).
    ///
    /// # Errors
    /// When the graph is invalid (a cycle).
    pub fn persist(&self, client: &Client) -> Result<Future<T>, Error> {
        let handles = run(client, &[&self.node])?;
        handles.into_iter().next().map(Future::from_future_handle).ok_or_else(|| unreachable!("one output handle"))
    }
}

impl<T: 'static> IntoArg<T> for &Delayed<T> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        if let Some(t) = &mut cx.token {
            t.add_key(self.key());
        }
        cx.keep_alive.push(self.node.clone());
        cx.local.push(None);
        Arg::Key(self.key().clone())
    }
}

impl<T: 'static> IntoArg<T> for Delayed<T> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        (&self).into_arg(cx)
    }
}

/// The graph that `roots` need, gathered depth first without recursion.
fn collect(roots: &[&Arc<DelayedNode>]) -> Graph {
    let mut graph = Graph::new();
    let mut seen: FxHashSet<*const DelayedNode> = FxHashSet::default();
    let mut stack: Vec<&DelayedNode> = roots.iter().map(|r| &***r).collect();
    while let Some(node) = stack.pop() {
        if !seen.insert(node as *const DelayedNode) {
            continue;
        }
        graph.insert(node.task.clone());
        for dep in &node.deps {
            if let Some(d) = (**dep).downcast_ref::<DelayedNode>() {
                stack.push(d);
            }
        }
    }
    graph
}

/// Submits the graph of `roots` and returns one handle per root, in order.
///
/// The tasks go to the executor in a depth-first post-order (each after its
/// dependencies, one branch finished before the next starts), which is the
/// memory-friendly order of [`Graph::order`] without building the graph: a
/// lazy graph of millions of tasks costs one pointer per task to schedule.
pub(crate) fn run(client: &Client, roots: &[&Arc<DelayedNode>]) -> Result<Vec<FutureHandle>, Error> {
    // Batch position of each task, assigned in post-order; u32::MAX while
    // the task is on the walk's stack.
    let mut position: FxHashMap<*const DelayedNode, u32> = FxHashMap::default();
    let mut order: Vec<&DelayedNode> = Vec::new();
    let mut stack: Vec<(&DelayedNode, usize)> = Vec::new();
    for root in roots {
        let root: &DelayedNode = root;
        if position.contains_key(&(root as *const DelayedNode)) {
            continue;
        }
        position.insert(root, u32::MAX);
        stack.push((root, 0));
        while let Some((node, next)) = stack.last_mut() {
            let node: &DelayedNode = node;
            let child = node.deps[*next..].iter().find_map(|d| d.downcast_ref::<DelayedNode>());
            *next = node.deps[*next..]
                .iter()
                .position(|d| d.is::<DelayedNode>())
                .map_or(node.deps.len(), |offset| *next + offset + 1);
            match child {
                Some(child) => {
                    if let std::collections::hash_map::Entry::Vacant(e) = position.entry(child) {
                        e.insert(u32::MAX);
                        stack.push((child, 0));
                    }
                }
                None => {
                    position.insert(node, order.len() as u32);
                    order.push(node);
                    stack.pop();
                }
            }
        }
    }
    // Each key argument of a lazy task is one entry of its `deps`, in order:
    // the in-batch links are read from there.
    let local_deps: Vec<shoal_local::LocalDeps> = order
        .iter()
        .map(|node| {
            node.deps
                .iter()
                .map(|d| {
                    d.downcast_ref::<DelayedNode>().and_then(|n| position.get(&(n as *const DelayedNode)).copied())
                })
                .collect()
        })
        .collect();
    drop(position);
    let mut consumers = vec![0u32; order.len()];
    for p in local_deps.iter().flatten().flatten() {
        consumers[*p as usize] += 1;
    }
    let outputs: FxHashSet<&Key> = roots.iter().map(|r| &r.task.key).collect();
    let handles: Vec<FutureHandle> = match &client.inner.backend {
        Backend::Cluster(state) => {
            if progress::enabled() {
                progress::cannot_count_on_a_cluster();
            }
            let tasks = order.iter().map(|n| crate::cluster::Outgoing {
                task: n.task.clone(),
                retries: n.retries,
                held: outputs.contains(&n.task.key),
                placement: n.placement.clone(),
            });
            state.submit(tasks).into_iter().map(FutureHandle::Cluster).collect()
        }
        Backend::Local(runtime) => {
            let tracker = progress::start(order.len());
            let submissions =
                order.iter().zip(local_deps).zip(consumers).enumerate().map(|(n, ((node, local_deps), c))| {
                    Submission {
                        task: node.task.clone(),
                        retries: node.retries,
                        hold: outputs.contains(&node.task.key),
                        notify: tracker.as_ref().map(|t| (t.clone() as Arc<dyn shoal_local::Notify>, n)),
                        local_deps,
                        consumers_in_batch: c,
                    }
                });
            runtime.submit(submissions).into_iter().map(FutureHandle::Local).collect()
        }
    };
    let by_key: FxHashMap<&Key, &FutureHandle> = handles.iter().map(|h| (h.key(), h)).collect();
    Ok(roots
        .iter()
        .map(|r| {
            by_key
                .get(&r.task.key)
                .map(|h| (*h).clone())
                .unwrap_or_else(|| unreachable!("every root was submitted with hold"))
        })
        .collect())
}

/// The result of a root of a computation, waited for.
fn value_of<T: Clone + Send + Sync + 'static>(handle: &FutureHandle) -> Result<T, Error> {
    match handle.value(None) {
        Some(v) => outcome_value(v),
        None => unreachable!("waiting without a timeout always ends with an outcome"),
    }
}

/// Several delayed values computed in one pass, sharing common tasks.
pub trait Computable {
    /// What computing gives.
    type Output;
    /// Runs on `client`.
    ///
    /// # Errors
    /// The first failure among the values.
    fn compute_on(&self, client: &Client) -> Result<Self::Output, Error>;
}

impl<T: Clone + Send + Sync + 'static> Computable for [Delayed<T>] {
    type Output = Vec<T>;
    fn compute_on(&self, client: &Client) -> Result<Vec<T>, Error> {
        let roots: Vec<&Arc<DelayedNode>> = self.iter().map(|d| &d.node).collect();
        run(client, &roots)?.iter().map(value_of).collect()
    }
}

impl<T: Clone + Send + Sync + 'static> Computable for Vec<Delayed<T>> {
    type Output = Vec<T>;
    fn compute_on(&self, client: &Client) -> Result<Vec<T>, Error> {
        self.as_slice().compute_on(client)
    }
}

impl<T: Clone + Send + Sync + 'static, const N: usize> Computable for [Delayed<T>; N] {
    type Output = Vec<T>;
    fn compute_on(&self, client: &Client) -> Result<Vec<T>, Error> {
        self.as_slice().compute_on(client)
    }
}

/// References compute as the values do: `compute(&[&a, &b])`.
impl<T: Clone + Send + Sync + 'static> Computable for [&Delayed<T>] {
    type Output = Vec<T>;
    fn compute_on(&self, client: &Client) -> Result<Vec<T>, Error> {
        let roots: Vec<&Arc<DelayedNode>> = self.iter().map(|d| &d.node).collect();
        run(client, &roots)?.iter().map(value_of).collect()
    }
}

impl<T: Clone + Send + Sync + 'static> Computable for Vec<&Delayed<T>> {
    type Output = Vec<T>;
    fn compute_on(&self, client: &Client) -> Result<Vec<T>, Error> {
        self.as_slice().compute_on(client)
    }
}

impl<T: Clone + Send + Sync + 'static, const N: usize> Computable for [&Delayed<T>; N] {
    type Output = Vec<T>;
    fn compute_on(&self, client: &Client) -> Result<Vec<T>, Error> {
        self.as_slice().compute_on(client)
    }
}

macro_rules! tuple_computable {
    ($($T:ident $i:tt),*) => {
        impl<$($T: Clone + Send + Sync + 'static),*> Computable for ($(&Delayed<$T>,)*) {
            type Output = ($($T,)*);
            fn compute_on(&self, client: &Client) -> Result<Self::Output, Error> {
                let roots = [$(&self.$i.node),*];
                let handles = run(client, &roots)?;
                Ok(($(value_of::<$T>(&handles[$i])?,)*))
            }
        }
    };
}

tuple_computable!(A 0, B 1);
tuple_computable!(A 0, B 1, C 2);
tuple_computable!(A 0, B 1, C 2, D 3);

/// Starts several delayed values on `client` in one batch and returns their
/// futures, keeping the results there (Dask's `client.persist` of many):
/// tasks they share run once.
///
/// ```
/// use shoal_client::{delayed, persist, Client};
/// fn inc(x: i64) -> i64 { x + 1 }
/// let client = Client::threads().unwrap();
/// let shared = delayed(inc, (1,));
/// let values = vec![delayed(inc, (&shared,)), delayed(inc, (&shared,))];
/// let futures = persist(&values, &client).unwrap();
/// assert_eq!(client.gather(&futures).unwrap(), vec![3, 3]);
/// ```
///
/// # Errors
/// When the graph is invalid.
pub fn persist<T: Clone + Send + Sync + 'static>(
    values: &[Delayed<T>],
    client: &Client,
) -> Result<Vec<Future<T>>, Error> {
    let roots: Vec<&Arc<DelayedNode>> = values.iter().map(|d| &d.node).collect();
    Ok(run(client, &roots)?.into_iter().map(Future::from_future_handle).collect())
}

/// Computes several delayed values in one pass on the current client:
/// tasks they share run once.
///
/// ```
/// use shoal_client::{delayed, compute, Client};
/// fn inc(x: i64) -> i64 { x + 1 }
/// fn double(x: i64) -> i64 { 2 * x }
/// let _client = Client::threads().unwrap();
/// let shared = delayed(inc, (1,));
/// let a = delayed(double, (&shared,));
/// let b = delayed(inc, (&shared,));
/// assert_eq!(compute(&(&a, &b)).unwrap(), (4, 3));        // a tuple: each its own type
/// assert_eq!(compute(&[&a, &b]).unwrap(), vec![4, 3]);      // references, no clones
/// assert_eq!(compute(&vec![a, b.clone()]).unwrap(), vec![4, 3]);
/// ```
///
/// # Errors
/// The first failure among the values.
pub fn compute<C: Computable + ?Sized>(values: &C) -> Result<C::Output, Error> {
    values.compute_on(&Client::current())
}
