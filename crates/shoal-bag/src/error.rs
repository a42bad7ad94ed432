//! What can go wrong with a bag.

use shoal_graph::TaskError;

/// Why a bag could not be built or computed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BagError {
    /// A task failed, or the graph could not run.
    #[error(transparent)]
    Task(#[from] shoal_client::Error),
    /// A result could not be read as the bag's element type.
    #[error("a partition could not be read: {0}")]
    Element(TaskError),
    /// A malformed file pattern.
    #[error("the file pattern `{pattern}` is malformed: {reason}")]
    Pattern {
        /// The pattern given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A pattern that matches no file.
    #[error("no file matches `{pattern}`")]
    NoFiles {
        /// The pattern given.
        pattern: String,
    },
    /// A closure where a cluster needs a `#[shoal::remote]` function.
    #[error("{}", crate::step::not_remote(function))]
    NotRemote {
        /// The closure's type name.
        function: String,
    },
    /// A reduction with nothing to reduce.
    #[error("`{operation}` of an empty bag: there is no value (give an initial value, or check the bag is not empty)")]
    Empty {
        /// The reduction.
        operation: &'static str,
    },
    /// Two bags that must be partitioned alike are not.
    #[error("`{operation}` needs bags with equal numbers of partitions, not {left} and {right} (repartition one)")]
    Partitions {
        /// The operation.
        operation: &'static str,
        /// This bag's partitions.
        left: usize,
        /// The other bag's.
        right: usize,
    },
}
