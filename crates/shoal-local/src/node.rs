//! One task inside the runtime, and the rules by which its state changes.
//!
//! ```text
//!            deps done            claimed            Ok
//!  Pending ────────────▶ (queued) ───────▶ Running ─────▶ Memory
//!     │                                      │  Err, retries left: back to queued
//!     │ cancel / a dependency failed         │  Err, none left
//!     ▼                                      ▼
//!  Cancelled / Erred ◀───────────────────── Erred
//! ```
//! A terminal node is *released* (its value dropped, its key forgotten) as soon
//! as no handle holds it and no dependent still has to read it.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use parking_lot::{Condvar, Mutex};
use shoal_graph::{Func, Key, TaskError, Value};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for dependencies, or queued to run.
    Pending,
    /// A thread is running it.
    Running,
    /// Finished; its result is (or was, if released) in memory.
    Memory,
    /// Failed, or a dependency failed.
    Erred,
    /// Cancelled before it finished.
    Cancelled,
}

impl Phase {
    /// Whether the task will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Memory | Phase::Erred | Phase::Cancelled)
    }
}

/// Why a task has no result.
#[derive(Debug)]
pub struct Failure {
    /// The task that has no result.
    pub key: Key,
    /// Why.
    pub kind: FailureKind,
}

/// The reasons a task can end without a result.
#[derive(Debug)]
pub enum FailureKind {
    /// Its own function failed or panicked (after all retries).
    Task(TaskError),
    /// A task it depends on has no result.
    Dependency(Arc<Failure>),
    /// It was cancelled.
    Cancelled,
    /// It refers to a key this runtime does not know.
    UnknownDependency(Key),
    /// The runtime shut down before it ran.
    Shutdown,
}

impl Failure {
    /// The failure at the origin of a chain of dependency failures.
    pub fn root(&self) -> &Failure {
        let mut f = self;
        while let FailureKind::Dependency(cause) = &f.kind {
            f = cause;
        }
        f
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            FailureKind::Task(e) => write!(f, "task {} failed: {e}", self.key),
            FailureKind::Dependency(cause) => {
                let root = cause.root();
                write!(f, "task {} did not run because its dependency {} has no result: {root}", self.key, cause.key)
            }
            FailureKind::Cancelled => write!(f, "task {} was cancelled", self.key),
            FailureKind::UnknownDependency(dep) => {
                write!(
                    f,
                    "task {} depends on {dep}, which this client does not hold (was its future dropped?)",
                    self.key
                )
            }
            FailureKind::Shutdown => {
                write!(f, "task {} did not run: the client shut down", self.key)
            }
        }
    }
}

/// The outcome of a task: its value, or why it has none.
pub type Outcome = Result<Value, Arc<Failure>>;

/// Told when a task it subscribed to reaches a terminal phase.
///
/// `done` is called while the task's lock is held, before threads waiting for
/// the task wake up: it must be quick and must not call into the runtime.
pub trait Notify: Send + Sync {
    /// Task number `index` (as given when subscribing) is done.
    fn done(&self, index: usize);
}

pub(crate) enum Listener {
    Dependent(Arc<Node>),
    Notify(Arc<dyn Notify>, usize),
}

/// One argument of a queued task: a literal value, or the node whose result
/// it is.
pub(crate) enum Slot {
    Value(Value),
    Dep(Arc<Node>),
}

/// Arguments of a task; up to two are stored inside the node itself, which
/// saves an allocation for the common small task.
pub(crate) type Slots = smallvec::SmallVec<[Slot; 2]>;

/// What a task runs: its function and its arguments.
pub(crate) struct Body {
    pub(crate) func: Func,
    pub(crate) args: Slots,
}

impl Body {
    /// A copy for a retryable attempt: dependencies stay referenced by the node.
    pub(crate) fn share(&self) -> Body {
        let args = self
            .args
            .iter()
            .map(|s| match s {
                Slot::Value(v) => Slot::Value(v.clone()),
                Slot::Dep(d) => Slot::Dep(d.clone()),
            })
            .collect();
        Body { func: self.func.clone(), args }
    }

    /// The nodes this body reads from.
    pub(crate) fn into_deps(self) -> impl Iterator<Item = Arc<Node>> {
        self.args.into_iter().filter_map(|s| match s {
            Slot::Dep(d) => Some(d),
            Slot::Value(_) => None,
        })
    }
}

/// What a node holds: what to run until it ran, then its result or failure.
/// One field for the three keeps a pending task small.
pub(crate) enum Content {
    Empty,
    Body(Body),
    Value(Value),
    Failed(Arc<Failure>),
}

pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) released: bool,
    pub(crate) cancel_requested: bool,
    pub(crate) has_waiters: bool,
    pub(crate) retries_left: u32,
    /// Handles (futures) that hold this node.
    pub(crate) holders: u32,
    /// Dependents that have not yet read (or given up on) the result.
    pub(crate) consumers: u32,
    pub(crate) content: Content,
    pub(crate) listeners: Vec<Listener>,
}

impl State {
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        match (&self.content, self.phase) {
            (Content::Value(v), Phase::Memory) => Some(Ok(v.clone())),
            (Content::Failed(f), Phase::Erred | Phase::Cancelled) => Some(Err(f.clone())),
            _ => None,
        }
    }

    pub(crate) fn failure(&self) -> Option<Arc<Failure>> {
        match &self.content {
            Content::Failed(f) => Some(f.clone()),
            _ => None,
        }
    }

    pub(crate) fn value(&self) -> Option<Value> {
        match &self.content {
            Content::Value(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Takes the value out, leaving nothing.
    pub(crate) fn take_value(&mut self) -> Option<Value> {
        match std::mem::replace(&mut self.content, Content::Empty) {
            Content::Value(v) => Some(v),
            other => {
                self.content = other;
                None
            }
        }
    }

    pub(crate) fn body(&self) -> Option<&Body> {
        match &self.content {
            Content::Body(b) => Some(b),
            _ => None,
        }
    }

    /// Stores the outcome; returns the body if one was still held.
    pub(crate) fn settle_content(&mut self, phase: Phase, content: Content) -> Option<Body> {
        self.phase = phase;
        match std::mem::replace(&mut self.content, content) {
            Content::Body(b) => Some(b),
            _ => None,
        }
    }

    /// Releases the node if nothing needs it any more (dropping its result);
    /// the caller then forgets its key.
    pub(crate) fn try_release(&mut self) -> bool {
        if self.released || !self.phase.is_terminal() || self.holders > 0 || self.consumers > 0 {
            return false;
        }
        self.released = true;
        self.content = Content::Empty;
        true
    }
}

/// A task in the runtime.
pub(crate) struct Node {
    pub(crate) key: Key,
    /// Unfinished dependencies plus one guard held while the node is wired up.
    pub(crate) deps_left: AtomicU32,
    pub(crate) state: Mutex<State>,
    pub(crate) done: Condvar,
}

impl Node {
    /// A pending node that runs `body`, held by `holders` handles and
    /// awaited by `consumers` reserved dependents.
    pub(crate) fn new(
        key: Key,
        body: Body,
        retries: u32,
        holders: u32,
        consumers: u32,
        listeners: Vec<Listener>,
    ) -> Node {
        Node {
            key,
            deps_left: AtomicU32::new(1),
            state: Mutex::new(State {
                phase: Phase::Pending,
                released: false,
                cancel_requested: false,
                has_waiters: false,
                retries_left: retries,
                holders,
                consumers,
                content: Content::Body(body),
                listeners,
            }),
            done: Condvar::new(),
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// Every pending task costs one node: the memory budget per task
    /// (300 bytes in all) depends on it staying this small.
    #[test]
    fn a_node_stays_small() {
        assert!(std::mem::size_of::<super::Node>() <= 152, "Node is {} bytes", std::mem::size_of::<super::Node>());
        assert_eq!(std::mem::size_of::<shoal_graph::Key>(), 32);
    }
}
