//! Typed functions and arguments on top of the erased [`Func`] and [`Arg`].
//!
//! A plain Rust function `fn(A, B) -> R` becomes a [`Func`] through
//! [`TaskFn`]; its arguments come from anything that implements
//! [`IntoArg`] — a literal value, or a handle to another task's result.

use std::any::{TypeId, type_name};
use std::hash::Hash;
use std::sync::Arc;

use crate::key::{Token, Tokenizer};
use crate::task::{Func, TaskError, Value};

/// What a task function may return: a value, or a `Result` whose `Err` fails
/// the task (and only that task) with the error's message.
///
/// Implemented for the standard types; for your own type, write
/// `shoal::task_output!(MyType);` or return `Ok::<_, Infallible>(value)`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a shoal task yet",
    label = "add `shoal::task_output!({Self});` next to the type, or return `Result<{Self}, E>`"
)]
pub trait TaskOutput {
    /// The value stored as the task's result.
    type Ok: Send + Sync + 'static;
    /// Splits into the stored value or the task's error.
    ///
    /// # Errors
    /// The task's own failure.
    fn into_task_result(self) -> Result<Self::Ok, TaskError>;
}

impl<T: Send + Sync + 'static, E: std::fmt::Display> TaskOutput for Result<T, E> {
    type Ok = T;
    fn into_task_result(self) -> Result<T, TaskError> {
        self.map_err(|e| TaskError::Failed(e.to_string()))
    }
}

/// Lets a type be returned from task functions as a plain value.
///
/// ```
/// #[derive(Clone)]
/// struct Stats { mean: f64 }
/// shoal_graph::task_output!(Stats);
/// ```
#[macro_export]
macro_rules! task_output {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::TaskOutput for $t {
            type Ok = $t;
            fn into_task_result(self) -> ::std::result::Result<$t, $crate::TaskError> {
                ::std::result::Result::Ok(self)
            }
        }
    )*};
}

task_output!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    &'static str
);

macro_rules! generic_output {
    ($([$($g:ident),*] $t:ty;)*) => {$(
        impl<$($g: Send + Sync + 'static),*> TaskOutput for $t {
            type Ok = $t;
            fn into_task_result(self) -> Result<$t, TaskError> {
                Ok(self)
            }
        }
    )*};
}

generic_output! {
    [T] Vec<T>;
    [T] Option<T>;
    [T] Box<T>;
    [T] Arc<T>;
    [T] std::collections::VecDeque<T>;
    [T] std::collections::BTreeSet<T>;
    [K, V] std::collections::BTreeMap<K, V>;
    [T, S] std::collections::HashSet<T, S>;
    [K, V, S] std::collections::HashMap<K, V, S>;
    [A, B] (A, B);
    [A, B, C] (A, B, C);
    [A, B, C, D] (A, B, C, D);
    [A, B, C, D, E] (A, B, C, D, E);
}

#[cfg(feature = "ndarray")]
impl<A: Send + Sync + 'static, D: ndarray::Dimension + 'static> TaskOutput for ndarray::Array<A, D> {
    type Ok = ndarray::Array<A, D>;
    fn into_task_result(self) -> Result<Self::Ok, TaskError> {
        Ok(self)
    }
}

impl<T: Send + Sync + 'static, const N: usize> TaskOutput for [T; N] {
    type Ok = [T; N];
    fn into_task_result(self) -> Result<[T; N], TaskError> {
        Ok(self)
    }
}

/// A function usable as a task with parameter tuple `Params`.
pub trait TaskFn<Params>: Send + Sync + 'static {
    /// The type of the task's result.
    type Output: Send + Sync + 'static;
    /// The erased form, named after the function's Rust path.
    fn into_func(self) -> Func;
}

/// Takes argument `position` out of its shared value, moving it when this is
/// the only reference and cloning otherwise.
///
/// # Errors
/// [`TaskError::ArgumentType`] when the value has another type.
pub fn take_arg<T: Clone + Send + Sync + 'static>(value: Value, position: usize) -> Result<T, TaskError> {
    match value.downcast::<T>() {
        Ok(arc) => Ok(Arc::try_unwrap(arc).unwrap_or_else(|shared| (*shared).clone())),
        Err(_) => Err(TaskError::ArgumentType { position, expected: type_name::<T>() }),
    }
}

/// The identity token of a function type, or `None` when it carries state.
///
/// Zero-sized function types (fn items, closures that capture nothing) are
/// fully described by their type, so two calls with equal arguments are the
/// same computation. A closure that captures data is not hashable.
pub fn fn_identity<F: 'static>() -> Option<Token> {
    if std::mem::size_of::<F>() != 0 {
        return None;
    }
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    TypeId::of::<F>().hash(&mut hasher);
    type_name::<F>().hash(&mut hasher);
    Some(Token(hasher.digest128()))
}

macro_rules! tuple_impls {
    ($n:expr; $($A:ident $a:ident $i:tt),*) => {
        impl<Func_, Out, $($A),*> TaskFn<($($A,)*)> for Func_
        where
            Func_: Fn($($A),*) -> Out + Send + Sync + 'static,
            Out: TaskOutput,
            $($A: Clone + Send + Sync + 'static),*
        {
            type Output = Out::Ok;

            fn into_func(self) -> Func {
                if std::mem::size_of::<Func_>() == 0 {
                    if let Some(f) = cached_func::<Func_>() {
                        return f;
                    }
                }
                let call = move |args: Vec<Value>| -> Result<Value, TaskError> {
                    if args.len() != $n {
                        return Err(TaskError::ArgumentCount { expected: $n, got: args.len() });
                    }
                    #[allow(unused_mut, unused_variables)]
                    let mut args = args.into_iter();
                    $(
                        let $a: $A = match args.next() {
                            Some(v) => take_arg::<$A>(v, $i)?,
                            None => unreachable!("length checked above"),
                        };
                    )*
                    let out = (self)($($a),*).into_task_result()?;
                    Ok(Arc::new(out) as Value)
                };
                let func = Func::new(type_name::<Func_>(), fn_identity::<Func_>(), Box::new(call));
                if std::mem::size_of::<Func_>() == 0 {
                    cache_func::<Func_>(&func);
                }
                func
            }
        }
    };
}

tuple_impls!(0;);
tuple_impls!(1; A a 0);
tuple_impls!(2; A a 0, B b 1);
tuple_impls!(3; A a 0, B b 1, C c 2);
tuple_impls!(4; A a 0, B b 1, C c 2, D d 3);
tuple_impls!(5; A a 0, B b 1, C c 2, D d 3, E e 4);
tuple_impls!(6; A a 0, B b 1, C c 2, D d 3, E e 4, G g 5);
tuple_impls!(7; A a 0, B b 1, C c 2, D d 3, E e 4, G g 5, H h 6);
tuple_impls!(8; A a 0, B b 1, C c 2, D d 3, E e 4, G g 5, H h 6, I i 7);

thread_local! {
    /// Erased functions of stateless function types, made once per thread:
    /// a million submits of one function share one `Func` allocation.
    static FUNCS: std::cell::RefCell<std::collections::HashMap<TypeId, Func>> = Default::default();
}

fn cached_func<F: 'static>() -> Option<Func> {
    FUNCS.with(|m| m.borrow().get(&TypeId::of::<F>()).cloned())
}

fn cache_func<F: 'static>(func: &Func) {
    FUNCS.with(|m| m.borrow_mut().insert(TypeId::of::<F>(), func.clone()));
}

/// Begins the token of a call of `func`: `None` when the call must not be
/// deduplicated (impure, or a function with hidden state).
pub fn call_tokenizer(func: &Func, pure: bool) -> Option<Tokenizer> {
    if !pure {
        return None;
    }
    func.identity().map(|id| Tokenizer::new(&id.0.to_le_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    fn fails(x: i64) -> Result<i64, String> {
        if x < 0 { Err(format!("negative input {x}")) } else { Ok(x) }
    }

    #[test]
    fn typed_functions_become_erased_calls() {
        let f = TaskFn::<(i64, i64)>::into_func(add);
        assert!(f.name().ends_with("::add"));
        assert_eq!(f.short_name().as_str(), "add");
        let out = f.call(vec![Arc::new(2i64), Arc::new(40i64)]).expect("add succeeds");
        assert_eq!(*out.downcast::<i64>().expect("i64 result"), 42);
    }

    #[test]
    fn errors_and_type_mismatches_are_reported() {
        let f = TaskFn::<(i64,)>::into_func(fails);
        let err = f.call(vec![Arc::new(-3i64)]).expect_err("negative fails");
        assert_eq!(err, TaskError::Failed("negative input -3".into()));
        let err = f.call(vec![Arc::new("text")]).expect_err("wrong type");
        assert!(matches!(err, TaskError::ArgumentType { position: 0, .. }));
        let err = f.call(vec![]).expect_err("missing argument");
        assert_eq!(err, TaskError::ArgumentCount { expected: 1, got: 0 });
    }

    #[test]
    fn identity_only_for_stateless_functions() {
        // A fn pointer may point anywhere; a fn item names one function.
        assert!(fn_identity::<fn(i64) -> i64>().is_none());
        let captured = [1, 2, 3];
        let closure = move |x: i64| x + captured.len() as i64;
        fn identity_of<F: 'static>(_: &F) -> Option<Token> {
            fn_identity::<F>()
        }
        assert!(identity_of(&closure).is_none());
        assert!(identity_of(&add).is_some());
        assert_eq!(identity_of(&add), identity_of(&add));
        assert_ne!(identity_of(&|x: i64| x + 1), identity_of(&|x: i64| x + 2));
    }
}
