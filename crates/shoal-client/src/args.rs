//! Arguments of task calls: literal values, futures, delayed values, and
//! lists of those.

use std::sync::Arc;

use serde::Serialize;
use shoal_graph::{Arg, Task, Tokenizer};

/// Something that can be passed where a task takes an argument of type `T`.
///
/// A literal `T` is one (it must be `Serialize` so equal calls get equal keys
/// and so it can travel to other processes); so is a handle to a task whose
/// result is a `T` (a future or a delayed value).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed where the task takes a `{T}`",
    label = "this argument is not a `{T}`",
    note = "an argument is a value of the parameter's type (Serialize), a `Future` or `Delayed` of it (or a \
            reference to one), or, for a `Vec<T>` parameter, a slice or Vec of futures or delayed values"
)]
pub trait IntoArg<T> {
    /// Turns into a task argument, adding itself to the call's token if one is
    /// being built.
    fn into_arg(self, cx: &mut ArgContext) -> Arg;
}

/// What building one call's arguments collects besides the arguments.
#[derive(Default)]
pub struct ArgContext {
    /// The call's token so far; `None` when the call is not content-addressed.
    pub token: Option<Tokenizer>,
    /// Objects that must live as long as the call refers to them: the lazy
    /// tasks or futures whose results are arguments (collected only when
    /// `keep` is set).
    pub keep_alive: Vec<Arc<dyn std::any::Any + Send + Sync>>,
    /// Whether arguments that refer to other tasks must be kept alive by the
    /// call (a lazy call does; a submitted one does not, the executor holds them).
    pub keep: bool,
    /// Tasks to submit before the call (a list of futures becomes a task that
    /// gathers them).
    pub pre_tasks: Vec<Task>,
    /// For each key argument so far: `Some(i)` when it is `pre_tasks[i]`.
    pub local: shoal_local::LocalDeps,
}

impl ArgContext {
    /// A context for a call submitted now; builds a token when `token` is `Some`.
    pub fn new(token: Option<Tokenizer>) -> ArgContext {
        ArgContext { token, keep_alive: Vec::new(), keep: false, pre_tasks: Vec::new(), local: Default::default() }
    }

    /// A context for a lazy call, which keeps its task arguments alive.
    pub fn keeping(token: Option<Tokenizer>) -> ArgContext {
        ArgContext { token, keep_alive: Vec::new(), keep: true, pre_tasks: Vec::new(), local: Default::default() }
    }
}

impl<T: Serialize + Send + Sync + 'static> IntoArg<T> for T {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        if let Some(t) = &mut cx.token
            && t.add_value(&self).is_err()
        {
            // A value that refuses to serialise cannot be content-addressed.
            cx.token = None;
        }
        Arg::Value(Arc::new(self))
    }
}

/// A tuple of things that fill a function's parameter tuple `Params`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` are not the arguments of a function taking `{Params}`",
    label = "give one argument per parameter, as a tuple",
    note = "arguments are a tuple with one element per parameter: `(x,)` for one, `(x, y)` for two"
)]
pub trait IntoArgs<Params> {
    /// Turns into task arguments, in order.
    fn into_args(self, cx: &mut ArgContext) -> Vec<Arg>;
}

macro_rules! tuple_args {
    ($($A:ident $IA:ident $i:tt),*) => {
        impl<$($A, $IA: IntoArg<$A>),*> IntoArgs<($($A,)*)> for ($($IA,)*) {
            #[allow(unused_variables)]
            fn into_args(self, cx: &mut ArgContext) -> Vec<Arg> {
                vec![$(self.$i.into_arg(cx)),*]
            }
        }
    };
}

tuple_args!();
tuple_args!(A IA 0);
tuple_args!(A IA 0, B IB 1);
tuple_args!(A IA 0, B IB 1, C IC 2);
tuple_args!(A IA 0, B IB 1, C IC 2, D ID 3);
tuple_args!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4);
tuple_args!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4, G IG 5);
tuple_args!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4, G IG 5, H IH 6);
tuple_args!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4, G IG 5, H IH 6, I II 7);

/// One input of [`Client::map`](crate::Client::map): the arguments of one
/// call. A single value (or future, or delayed value) for a function of one
/// parameter; a tuple with an element per parameter for a function of
/// several, as `zip` of several iterables gives (Dask's `map(f, xs, ys)`).
///
/// ```
/// fn add(a: i64, b: i64) -> i64 { a + b }
/// fn inc(x: i64) -> i64 { x + 1 }
///
/// let client = shoal_client::Client::threads()?;
/// let (xs, ys) = (vec![1, 2, 3], vec![10, 20, 30]);
/// let sums = client.map(add, xs.into_iter().zip(ys));
/// assert_eq!(client.gather(&sums)?, vec![11, 22, 33]);
/// let next = client.map(inc, &sums);          // futures are inputs too
/// assert_eq!(client.gather(&next)?, vec![12, 23, 34]);
/// # Ok::<(), shoal_client::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the arguments of one call of a function taking `{Params}`",
    label = "each input of `map` is the arguments of one call",
    note = "a function of one parameter takes a value (or future) per input; one of several takes a tuple per \
            input: zip the iterables, `client.map(f, xs.into_iter().zip(ys))`"
)]
pub trait MapInput<Params> {
    /// Turns into one call's task arguments, in order.
    fn into_call_args(self, cx: &mut ArgContext) -> Vec<Arg>;
}

impl<A, T: IntoArg<A>> MapInput<(A,)> for T {
    fn into_call_args(self, cx: &mut ArgContext) -> Vec<Arg> {
        vec![self.into_arg(cx)]
    }
}

macro_rules! tuple_inputs {
    ($($A:ident $IA:ident $i:tt),*) => {
        impl<$($A, $IA: IntoArg<$A>),*> MapInput<($($A,)*)> for ($($IA,)*) {
            fn into_call_args(self, cx: &mut ArgContext) -> Vec<Arg> {
                vec![$(self.$i.into_arg(cx)),*]
            }
        }
    };
}

tuple_inputs!(A IA 0, B IB 1);
tuple_inputs!(A IA 0, B IB 1, C IC 2);
tuple_inputs!(A IA 0, B IB 1, C IC 2, D ID 3);
tuple_inputs!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4);
tuple_inputs!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4, G IG 5);
tuple_inputs!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4, G IG 5, H IH 6);
tuple_inputs!(A IA 0, B IB 1, C IC 2, D ID 3, E IE 4, G IG 5, H IH 6, I II 7);
