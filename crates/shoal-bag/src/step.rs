//! The steps of a bag that run inside one task per partition, and how they
//! travel: by the name of the function, which the worker looks up.

use std::any::type_name;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use shoal_graph::elements::Elements;
use shoal_graph::partition::Partition;
use shoal_graph::remote;
use shoal_graph::{TaskError, short_fn_name};

/// A function and the loops it runs in.
#[derive(Clone)]
pub(crate) struct Func {
    name: Arc<str>,
    elements: Elements,
}

impl Func {
    /// The function of type `F`, with the loops `elements` built from it.
    pub(crate) fn new<F: 'static>(elements: Elements) -> Func {
        Func { name: type_name::<F>().into(), elements }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The name a task group shows (`double`, `lambda`).
    pub(crate) fn short_name(&self) -> String {
        short_fn_name(&self.name).to_string()
    }

    pub(crate) fn elements(&self) -> &Elements {
        &self.elements
    }

    /// Whether workers in other processes can find this function.
    pub(crate) fn is_remote(&self) -> bool {
        remote::lookup(&self.name).and_then(|f| f.elements()).is_some()
    }
}

impl fmt::Debug for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// On the wire a function is its name; only `#[shoal::remote]` functions,
/// which every process has registered, can go there.
impl Serialize for Func {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !self.is_remote() {
            return Err(serde::ser::Error::custom(not_remote(&self.name)));
        }
        serializer.serialize_str(&self.name)
    }
}

pub(crate) fn not_remote(name: &str) -> String {
    format!(
        "the bag step `{name}` is not a #[shoal::remote] function: closures run on the threads \
         executor only; on a cluster write a named function and mark it #[shoal::remote]"
    )
}

impl<'de> Deserialize<'de> for Func {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Func, D::Error> {
        let name = String::deserialize(deserializer)?;
        let elements = remote::lookup(&name)
            .and_then(|f| f.elements())
            .ok_or_else(|| de::Error::custom(not_remote(&name)))?
            .clone();
        Ok(Func { name: name.into(), elements })
    }
}

/// One step of a fused chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Step {
    Map(Func),
    Filter(Func),
    FlatMap(Func),
    MapPartitions(Func),
    /// Elementwise with a second argument: the partition given to the task
    /// at this position of its extra inputs, or one value for all.
    MapWith {
        func: Func,
        extra: usize,
        broadcast: bool,
    },
    /// Strings split at whitespace, the pieces flattened (Dask's
    /// `.str.split().flatten()`): built in, so a count after it can look
    /// the words up where they lie in the line.
    SplitWhitespace,
}

impl Step {
    /// The user's function, for steps that have one.
    pub(crate) fn func(&self) -> Option<&Func> {
        match self {
            Step::Map(f) | Step::Filter(f) | Step::FlatMap(f) | Step::MapPartitions(f) => Some(f),
            Step::MapWith { func, .. } => Some(func),
            Step::SplitWhitespace => None,
        }
    }

    pub(crate) fn short_name(&self) -> String {
        match self.func() {
            Some(f) => f.short_name(),
            None => "split".to_string(),
        }
    }

    /// Whether the step maps each element on its own (so a partition can
    /// go through it in chunks).
    fn is_elementwise(&self) -> bool {
        matches!(self, Step::Map(_) | Step::Filter(_) | Step::FlatMap(_) | Step::SplitWhitespace)
    }

    fn run(&self, input: Partition, extras: &[Partition]) -> Result<Partition, TaskError> {
        match self {
            Step::Map(f) => f.elements().map(f.name())?(input),
            Step::Filter(f) => f.elements().filter(f.name())?(input),
            Step::FlatMap(f) => f.elements().flat_map(f.name())?(input),
            Step::MapPartitions(f) => f.elements().map_partition(f.name())?(input),
            Step::MapWith { func, extra, broadcast } => {
                let other = extras
                    .get(*extra)
                    .ok_or_else(|| TaskError::Failed(format!("`{}` has no second input", func.name())))?;
                func.elements().map_with(func.name())?(input, other, *broadcast)
            }
            Step::SplitWhitespace => {
                let lines = input.into_vec::<String>()?;
                let words: Vec<String> =
                    lines.iter().flat_map(|line| line.split_whitespace().map(str::to_owned)).collect();
                Ok(Partition::from_vec(words))
            }
        }
    }
}

/// Where a partition's elements come from, before the steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Source {
    /// The task's input partition.
    Input,
    /// The integers `start..stop`.
    Range { start: i64, stop: i64 },
    /// The lines of a text file (gzip or zstd by its extension).
    Text { path: String },
}

/// Lines per chunk when a text file streams through elementwise steps:
/// enough to amortise each step's call, few enough to stay in cache.
const TEXT_CHUNK_LINES: usize = 8192;

/// A source and the steps after it: one task's work.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(crate) source: Source,
    pub(crate) steps: Vec<Step>,
}

impl Plan {
    /// The plan before a last `split_whitespace` step, if that is its last.
    pub(crate) fn split_words_last(&self) -> Option<Plan> {
        match self.steps.split_last() {
            Some((Step::SplitWhitespace, before)) => Some(Plan { source: self.source.clone(), steps: before.to_vec() }),
            _ => None,
        }
    }

    /// Runs the plan and gives `f` its output in chunks: a text file
    /// streams through elementwise steps a few thousand lines at a time,
    /// so a reduction after them never holds the whole file; any other
    /// plan gives one chunk.
    pub(crate) fn for_each_chunk(
        &self,
        input: Partition,
        extras: Vec<Partition>,
        f: &mut dyn FnMut(Partition) -> Result<(), TaskError>,
    ) -> Result<(), TaskError> {
        let elementwise = self.steps.iter().all(Step::is_elementwise);
        match &self.source {
            Source::Text { path } if elementwise => {
                crate::text::for_each_chunk(path, TEXT_CHUNK_LINES, &mut |lines| f(self.apply(lines, &[])?))
            }
            _ => f(self.run(input, extras)?),
        }
    }

    /// Runs the plan over the task's input (empty for a source that makes
    /// its own) and the partitions `MapWith` steps read.
    pub(crate) fn run(&self, input: Partition, extras: Vec<Partition>) -> Result<Partition, TaskError> {
        let part = match &self.source {
            Source::Input => input,
            Source::Range { start, stop } => Partition::from_vec((*start..*stop).collect::<Vec<i64>>()),
            Source::Text { path } => crate::text::read_lines(path)?,
        };
        self.apply(part, &extras)
    }

    /// The steps, in order, over a partition of the source.
    fn apply(&self, mut part: Partition, extras: &[Partition]) -> Result<Partition, TaskError> {
        for step in &self.steps {
            part = step.run(part, extras)?;
        }
        Ok(part)
    }
}
