//! Remote functions: registered under a stable name, with the codecs that
//! move their arguments and results between processes.
//!
//! Rust cannot send a closure to another process, but every process of a
//! shoal cluster runs the same program. A function marked `#[shoal::remote]`
//! is registered at start-up under its Rust path (`my_crate::stats::mean`);
//! a worker finds it by that name, decodes the arguments with serde, runs it,
//! and keeps the result — encoded only when it must leave the process.
//!
//! `#[shoal::remote]` (in the `shoal` crate) builds a [`Registration`]; the
//! codecs can also be built by hand:
//!
//! ```
//! use shoal_graph::remote::RemoteFunc;
//! fn scale(x: f64, by: f64) -> f64 { x * by }
//!
//! let f = RemoteFunc::new::<(f64, f64), _>(scale);
//! let args = [f.encode_arg(0, &2.5f64)?, f.encode_arg(1, &4.0f64)?];
//! assert_eq!(f.decode_result::<f64>(&f.call_encoded(&args)?)?, 10.0);
//! # Ok::<(), shoal_graph::remote::RemoteError>(())
//! ```

use std::any::{Any, type_name};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::elements::Elements;
use crate::{Func, TaskError, TaskFn, Value};

mod pod;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A registration made by `#[shoal::remote]`.
pub struct Registration {
    name: &'static str,
    make: fn() -> RemoteFunc,
}

impl Registration {
    /// A function registered under `name`.
    pub const fn new(name: &'static str, make: fn() -> RemoteFunc) -> Registration {
        Registration { name, make }
    }
}

inventory::collect!(Registration);

#[doc(hidden)]
pub use inventory as __inventory;

/// Registers functions for remote workers by hand, under
/// `this_module::name`, as `#[shoal::remote]` does: for a crate's own task
/// functions and for instances of generic ones (`"sum<i64>" => (Vec<i64>,),
/// sum::<i64>;`).
///
/// ```
/// fn scale(x: f64, by: f64) -> f64 { x * by }
/// shoal_graph::register_remote! {
///     "scale" => (f64, f64), scale;
/// }
/// assert!(shoal_graph::remote::lookup(concat!(module_path!(), "::scale")).is_some());
/// ```
#[macro_export]
macro_rules! register_remote {
    ($($name:expr => $params:ty, $f:expr;)*) => {$(
        $crate::remote::__inventory::submit! {
            $crate::remote::Registration::new(
                ::core::concat!(::core::module_path!(), "::", $name),
                || $crate::remote::RemoteFunc::new::<$params, _>($f),
            )
        }
    )*};
}

/// Why a remote call could not be encoded, decoded or made.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No function of this name is registered.
    #[error(
        "function `{name}` is not registered for remote workers: put #[shoal::remote] on it \
         (closures cannot run in other processes; use a named function), and start workers \
         from the program that defines it"
    )]
    NotRegistered {
        /// The name asked for.
        name: String,
    },
    /// An argument could not be decoded.
    #[error("argument {position} of `{function}` could not be decoded as {expected}: {source}")]
    Decode {
        /// The function.
        function: String,
        /// Zero-based position.
        position: usize,
        /// The parameter type.
        expected: &'static str,
        /// postcard's error.
        source: postcard::Error,
    },
    /// A value could not be encoded.
    #[error("a value of `{function}` could not be encoded: {source}")]
    Encode {
        /// The function.
        function: String,
        /// postcard's error.
        source: postcard::Error,
    },
    /// A value had another type than the function takes or returns.
    #[error("`{function}` expects {expected} at position {position}")]
    WrongType {
        /// The function.
        function: String,
        /// Zero-based position (the result is position `usize::MAX`).
        position: usize,
        /// The type expected there.
        expected: &'static str,
    },
    /// The function takes another number of arguments.
    #[error("`{function}` takes {expected} arguments, {got} were given")]
    Arity {
        /// The function.
        function: String,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        got: usize,
    },
    /// The function itself failed.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// The parameter tuple of a remote function: how to move each argument.
pub trait RemoteParams: 'static {
    /// The number of parameters.
    const ARITY: usize;
    /// Decodes argument `position`.
    ///
    /// # Errors
    /// When the bytes are not a value of that parameter's type.
    fn decode(function: &str, position: usize, bytes: &[u8]) -> Result<Value, RemoteError>;
    /// Encodes argument `position`.
    ///
    /// # Errors
    /// When the value has another type or does not serialise.
    fn encode(function: &str, position: usize, value: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, RemoteError>;
}

fn decode_as<T: DeserializeOwned + Send + Sync + 'static>(
    function: &str,
    position: usize,
    bytes: &[u8],
) -> Result<Value, RemoteError> {
    let decoded = match pod::decode::<T>(bytes) {
        Some(fast) => fast,
        None => postcard::from_bytes::<T>(bytes).map(|v| Arc::new(v) as Value),
    };
    decoded.map_err(|source| RemoteError::Decode {
        function: function.to_string(),
        position,
        expected: type_name::<T>(),
        source,
    })
}

fn encode_as<T: Serialize + 'static>(
    function: &str,
    position: usize,
    value: &(dyn Any + Send + Sync),
) -> Result<Vec<u8>, RemoteError> {
    let typed = value.downcast_ref::<T>().ok_or_else(|| RemoteError::WrongType {
        function: function.to_string(),
        position,
        expected: type_name::<T>(),
    })?;
    if let Some(size) = pod::size(typed) {
        let mut out = vec![0; size];
        pod::encode(typed, &mut out);
        return Ok(out);
    }
    postcard::to_allocvec(typed).map_err(|source| RemoteError::Encode { function: function.to_string(), source })
}

/// Encodes a `T` into a writer.
fn encode_to_as<T: Serialize + 'static>(
    function: &str,
    value: &(dyn Any + Send + Sync),
    out: &mut dyn std::io::Write,
) -> Result<(), RemoteError> {
    let typed = value.downcast_ref::<T>().ok_or_else(|| RemoteError::WrongType {
        function: function.to_string(),
        position: usize::MAX,
        expected: type_name::<T>(),
    })?;
    let encode_error = |source| RemoteError::Encode { function: function.to_string(), source };
    match pod::write(typed, &mut *out) {
        Some(written) => written.map_err(|_| encode_error(postcard::Error::SerializeBufferFull)),
        None => postcard::to_io(typed, out).map(|_| ()).map_err(encode_error),
    }
}

macro_rules! remote_params {
    ($n:expr; $($A:ident $i:tt),*) => {
        impl<$($A: Serialize + DeserializeOwned + Send + Sync + 'static),*> RemoteParams for ($($A,)*) {
            const ARITY: usize = $n;

            #[allow(unused_variables)]
            fn decode(function: &str, position: usize, bytes: &[u8]) -> Result<Value, RemoteError> {
                match position {
                    $($i => decode_as::<$A>(function, position, bytes),)*
                    _ => Err(RemoteError::Arity { function: function.to_string(), expected: $n, got: position + 1 }),
                }
            }

            #[allow(unused_variables)]
            fn encode(function: &str, position: usize, value: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, RemoteError> {
                match position {
                    $($i => encode_as::<$A>(function, position, value),)*
                    _ => Err(RemoteError::Arity { function: function.to_string(), expected: $n, got: position + 1 }),
                }
            }
        }
    };
}

remote_params!(0;);
remote_params!(1; A 0);
remote_params!(2; A 0, B 1);
remote_params!(3; A 0, B 1, C 2);
remote_params!(4; A 0, B 1, C 2, D 3);
remote_params!(5; A 0, B 1, C 2, D 3, E 4);
remote_params!(6; A 0, B 1, C 2, D 3, E 4, G 5);
remote_params!(7; A 0, B 1, C 2, D 3, E 4, G 5, H 6);
remote_params!(8; A 0, B 1, C 2, D 3, E 4, G 5, H 6, I 7);

/// Decodes a value for (function, position).
type Decoder = fn(&str, usize, &[u8]) -> Result<Value, RemoteError>;
/// Encodes a value for (function, position).
type Encoder = fn(&str, usize, &(dyn Any + Send + Sync)) -> Result<Vec<u8>, RemoteError>;

/// Views a value as the head and body of its encoding (see
/// [`RemoteFunc::borrow_result`]).
type Borrower = fn(&(dyn Any + Send + Sync)) -> Option<(Vec<u8>, &[u8])>;

/// A registered function: the erased callable and its codecs.
pub struct RemoteFunc {
    func: Func,
    arity: usize,
    decode_arg: Decoder,
    encode_arg: Encoder,
    encode_result: Encoder,
    decode_result: Decoder,
    measure_result: fn(&(dyn Any + Send + Sync)) -> Option<u64>,
    borrow_result: Borrower,
    encode_result_to: fn(&str, &(dyn Any + Send + Sync), &mut dyn std::io::Write) -> Result<(), RemoteError>,
    elements: Option<Elements>,
}

fn measure_as<T: Serialize + 'static>(value: &(dyn Any + Send + Sync)) -> Option<u64> {
    let typed = value.downcast_ref::<T>()?;
    // Walking a vector of millions of numbers through serde only to count
    // bytes would cost as much as encoding it.
    let size = match pod::size(typed) {
        Some(n) => n,
        None => postcard::experimental::serialized_size(typed).ok()?,
    };
    Some(size as u64)
}

fn actor_stays(function: &str) -> RemoteError {
    RemoteError::Task(TaskError::Failed(format!(
        "the actor that `{function}` made stays on its worker: call its methods instead of moving it"
    )))
}

fn refuse_actor_encode(function: &str, _: usize, _: &(dyn Any + Send + Sync)) -> Result<Vec<u8>, RemoteError> {
    Err(actor_stays(function))
}

fn refuse_actor_decode(function: &str, _: usize, _: &[u8]) -> Result<Value, RemoteError> {
    Err(actor_stays(function))
}

fn borrow_as<T: 'static>(value: &(dyn Any + Send + Sync)) -> Option<(Vec<u8>, &[u8])> {
    pod::borrow(value.downcast_ref::<T>()?)
}

impl RemoteFunc {
    /// The remote form of `f`, whose parameters are `P`.
    pub fn new<P: RemoteParams, F>(f: F) -> RemoteFunc
    where
        F: TaskFn<P>,
        F::Output: Serialize + DeserializeOwned,
    {
        RemoteFunc {
            func: f.into_func(),
            arity: P::ARITY,
            decode_arg: P::decode,
            encode_arg: P::encode,
            encode_result: encode_as::<F::Output>,
            decode_result: decode_as::<F::Output>,
            measure_result: measure_as::<F::Output>,
            borrow_result: borrow_as::<F::Output>,
            encode_result_to: encode_to_as::<F::Output>,
            elements: None,
        }
    }

    /// The same function, with the loops a bag runs it in
    /// (`#[shoal::remote]` adds them for functions of one or two parameters).
    pub fn with_elements(mut self, elements: Elements) -> RemoteFunc {
        self.elements = Some(elements);
        self
    }

    /// The loops a bag runs this function in, if it has them.
    pub fn elements(&self) -> Option<&Elements> {
        self.elements.as_ref()
    }

    /// The remote form of an actor constructor `f`: it runs as a task on a
    /// worker, whose result is the actor itself ([`ActorCell`]), kept where
    /// it was made. Its result is never encoded: an actor does not leave
    /// its worker; its calls come to it.
    ///
    /// [`ActorCell`]: crate::actor::ActorCell
    pub fn new_actor<P: RemoteParams, F>(f: F) -> RemoteFunc
    where
        F: TaskFn<P, Output = crate::actor::ActorCell>,
    {
        RemoteFunc {
            func: f.into_func(),
            arity: P::ARITY,
            decode_arg: P::decode,
            encode_arg: P::encode,
            encode_result: refuse_actor_encode,
            decode_result: refuse_actor_decode,
            measure_result: |value| value.downcast_ref::<crate::actor::ActorCell>().map(|cell| cell.size()),
            borrow_result: |_| None,
            encode_result_to: |function, _, _| Err(actor_stays(function)),
            elements: None,
        }
    }

    /// The stable name: the function's Rust path.
    pub fn name(&self) -> &str {
        self.func.name()
    }

    /// The erased callable, for running here.
    pub fn func(&self) -> &Func {
        &self.func
    }

    /// How many arguments it takes.
    pub fn arity(&self) -> usize {
        self.arity
    }

    /// Encodes argument `position`.
    ///
    /// # Errors
    /// [`RemoteError::WrongType`] when `value` is not of the parameter's type.
    pub fn encode_arg<T: Any + Send + Sync>(&self, position: usize, value: &T) -> Result<Vec<u8>, RemoteError> {
        (self.encode_arg)(self.name(), position, value)
    }

    /// Encodes an erased argument value (a literal of a submitted task).
    ///
    /// # Errors
    /// As [`RemoteFunc::encode_arg`].
    pub fn encode_value(&self, position: usize, value: &Value) -> Result<Vec<u8>, RemoteError> {
        (self.encode_arg)(self.name(), position, value.as_ref())
    }

    /// Decodes argument `position`.
    ///
    /// # Errors
    /// [`RemoteError::Decode`] when the bytes are not a value of its type.
    pub fn decode_arg(&self, position: usize, bytes: &[u8]) -> Result<Value, RemoteError> {
        (self.decode_arg)(self.name(), position, bytes)
    }

    /// Encodes a result of this function (to send it to another process).
    ///
    /// # Errors
    /// When the value is not this function's result type.
    pub fn encode_result(&self, value: &Value) -> Result<Vec<u8>, RemoteError> {
        (self.encode_result)(self.name(), usize::MAX, value.as_ref())
    }

    /// Encodes a result of this function into a writer: a worker writes a
    /// result straight into a shared-memory file this way, without an
    /// intermediate buffer. Bulk bytes ([`Blob`](crate::Blob), `Vec<u8>`)
    /// reach the writer in one `write_all`, so give it a
    /// [`BufWriter`](std::io::BufWriter) (which passes large writes
    /// through) rather than many small writes to a file.
    ///
    /// # Errors
    /// When the value is not this function's result type, or the writer
    /// fails (reported as an encoding error).
    pub fn encode_result_to(&self, value: &Value, out: &mut dyn std::io::Write) -> Result<(), RemoteError> {
        (self.encode_result_to)(self.name(), value.as_ref(), out)
    }

    /// A result's encoding without encoding it, where the type allows: a
    /// short head (the length) and a body that is the value's own memory.
    /// Head then body are exactly [`RemoteFunc::encode_result`]'s bytes.
    /// `Some` for [`Blob`](crate::Blob) and, on little-endian machines,
    /// `Vec<u8>`, `Vec<i8>`, `Vec<f32>` and `Vec<f64>`: a worker lends such
    /// a result to a fetcher on its host in place.
    pub fn borrow_result<'v>(&self, value: &'v Value) -> Option<(Vec<u8>, &'v [u8])> {
        (self.borrow_result)(value.as_ref())
    }

    /// The size of a result of this function once encoded, without encoding
    /// it (what the scheduler weighs transfers by); `None` for another type.
    pub fn result_size(&self, value: &Value) -> Option<u64> {
        (self.measure_result)(value.as_ref())
    }

    /// Decodes argument `position` from a shared buffer: [`Blob`](crate::Blob)s
    /// in it become references into `bytes` instead of copies (see
    /// [`with_backing`](crate::blob::with_backing)).
    ///
    /// # Errors
    /// As [`RemoteFunc::decode_arg`].
    pub fn decode_arg_shared(&self, position: usize, bytes: &bytes::Bytes) -> Result<Value, RemoteError> {
        crate::blob::with_backing(bytes, || self.decode_arg(position, bytes))
    }

    /// Decodes a result of this function into its type `T`.
    ///
    /// # Errors
    /// When the bytes are not a result of this function, or `T` is not its type.
    pub fn decode_result<T: Clone + Send + Sync + 'static>(&self, bytes: &[u8]) -> Result<T, RemoteError> {
        let value = (self.decode_result)(self.name(), usize::MAX, bytes)?;
        value.downcast_ref::<T>().cloned().ok_or_else(|| RemoteError::WrongType {
            function: self.name().to_string(),
            position: usize::MAX,
            expected: type_name::<T>(),
        })
    }

    /// Decodes a result of this function into its erased value.
    ///
    /// # Errors
    /// When the bytes are not a result of this function.
    pub fn decode_result_value(&self, bytes: &[u8]) -> Result<Value, RemoteError> {
        (self.decode_result)(self.name(), usize::MAX, bytes)
    }

    /// Decodes encoded arguments, runs the function here, and encodes the
    /// result: what a worker does with a task it is given.
    ///
    /// # Errors
    /// A decoding failure naming the argument, or the function's own failure.
    pub fn call_encoded(&self, args: &[Vec<u8>]) -> Result<Vec<u8>, RemoteError> {
        if args.len() != self.arity {
            return Err(RemoteError::Arity {
                function: self.name().to_string(),
                expected: self.arity,
                got: args.len(),
            });
        }
        let values = args.iter().enumerate().map(|(i, a)| self.decode_arg(i, a)).collect::<Result<Vec<_>, _>>()?;
        let result = self.func.call(values)?;
        self.encode_result(&result)
    }
}

/// Every registered function under its type name (what a submitted task's
/// function is called), and under its module path where that differs (a
/// function declared inside another function).
fn registry() -> &'static HashMap<String, &'static RemoteFunc> {
    static REGISTRY: OnceLock<HashMap<String, &'static RemoteFunc>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut map = HashMap::new();
        for r in inventory::iter::<Registration> {
            // Registered functions live as long as the program.
            let f: &'static RemoteFunc = Box::leak(Box::new((r.make)()));
            map.insert(f.name().to_string(), f);
            map.entry(r.name.to_string()).or_insert(f);
        }
        map
    })
}

/// The registered function with this name.
pub fn lookup(name: &str) -> Option<&'static RemoteFunc> {
    registry().get(name).copied()
}

/// The registered function with this name, or an error that says how to
/// register it.
///
/// # Errors
/// [`RemoteError::NotRegistered`].
pub fn require(name: &str) -> Result<&'static RemoteFunc, RemoteError> {
    lookup(name).ok_or_else(|| RemoteError::NotRegistered { name: name.to_string() })
}

/// A start-up hook that must see every registration: see
/// [`run_after_registrations`].
static AFTER_REGISTRATIONS: OnceLock<fn()> = OnceLock::new();

/// Runs `hook` during start-up, after every `#[shoal::remote]` registration
/// of the program has been made, and before `main`.
///
/// Registrations are made by constructors, one per function, which run
/// before `main` in link order. A process that becomes a worker in a
/// constructor of its own, and never returns, would otherwise miss the
/// registrations whose constructors come after it (those of the crates it
/// depends on). Every crate that registers functions depends on this one,
/// and the linker places a crate's constructors after those of the crates
/// that depend on it, so this crate's constructor, which calls the hook,
/// runs after all registrations. Only the first hook set is kept.
pub fn run_after_registrations(hook: fn()) {
    let _ = AFTER_REGISTRATIONS.set(hook);
}

#[ctor::ctor]
fn start_after_registrations() {
    if let Some(hook) = AFTER_REGISTRATIONS.get() {
        hook();
    }
}

/// The names of all registered functions, sorted.
pub fn registered_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = registry().values().map(|f| f.name()).collect();
    names.sort_unstable();
    names.dedup();
    names
}
