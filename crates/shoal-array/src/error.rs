//! What can go wrong with arrays.

/// Why an array could not be built or computed.
///
/// Building an array is lazy and never fails on the spot: an invalid
/// operation gives an array that carries its error, every array built from it
/// carries the same error, and [`Array::compute`](crate::Array::compute) (or
/// [`Array::validate`](crate::Array::validate)) returns it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ArrayError {
    /// Two shapes that an operation needs to match do not.
    #[error("{operation}: shapes {left:?} and {right:?} {reason}")]
    Shapes {
        /// The operation (`add`, `matmul`, `concatenate`, …).
        operation: &'static str,
        /// The first operand's shape.
        left: Vec<usize>,
        /// The second operand's shape.
        right: Vec<usize>,
        /// What is wrong with them.
        reason: String,
    },
    /// An axis outside the array.
    #[error("{operation}: axis {axis} is out of range for an array of {ndim} dimensions")]
    Axis {
        /// The operation.
        operation: &'static str,
        /// The axis asked for.
        axis: usize,
        /// The array's number of dimensions.
        ndim: usize,
    },
    /// A chunk specification that does not fit the shape.
    #[error("chunks {chunks} do not fit shape {shape:?}: {reason}")]
    Chunks {
        /// The specification, as given.
        chunks: String,
        /// The array's shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: String,
    },
    /// An argument out of its range (a slice bound, a count, a size).
    #[error("{operation}: {message}")]
    Invalid {
        /// The operation.
        operation: &'static str,
        /// What is wrong, with the value.
        message: String,
    },
    /// Running the graph failed.
    #[error(transparent)]
    Compute(#[from] shoal_client::Error),
    /// A chunk came back with another type or shape than the graph promised
    /// (a `map_blocks` function that changed it, for example).
    #[error("chunk {index:?}: {message}")]
    Chunk {
        /// The chunk's index in the grid of chunks.
        index: Vec<usize>,
        /// What was wrong with it.
        message: String,
    },
}

impl ArrayError {
    /// Whether running the same computation again may succeed: only when a
    /// task failed for a reason outside the graph (a lost worker, a timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ArrayError::Compute(e) if e.is_retryable())
    }
}
