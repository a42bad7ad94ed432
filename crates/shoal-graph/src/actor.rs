//! Actors at the level every process shares: an object that a task
//! creates and then keeps, with its methods called by name.
//!
//! `#[shoal::actor]` on a type's `impl` block makes the type an
//! [`ActorClass`] (its methods dispatched by name, arguments and results
//! encoded with postcard) and lets its constructors be tasks: the result
//! such a task keeps is an [`ActorCell`], which holds the object behind a
//! lock, so calls on one actor run one at a time.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A type whose methods can be called by name on a worker.
pub trait ActorClass: Send + Sized + 'static {
    /// The class's name: the type's Rust path.
    const CLASS: &'static str;
    /// Calls method `method` with encoded arguments; its encoded result, or
    /// why not (an unknown method, an argument that does not decode).
    ///
    /// # Errors
    /// The message to fail the call with.
    fn dispatch(&mut self, method: &str, args: &[Vec<u8>]) -> Result<Vec<u8>, String>;
}

type Dispatch = fn(&mut (dyn Any + Send), &str, &[Vec<u8>]) -> Result<Vec<u8>, String>;

/// An actor's object, kept by the worker (or the process) that made it.
pub struct ActorCell {
    class: &'static str,
    size: u64,
    object: Mutex<Box<dyn Any + Send>>,
    dispatch: Dispatch,
}

fn dispatch_as<T: ActorClass>(
    object: &mut (dyn Any + Send),
    method: &str,
    args: &[Vec<u8>],
) -> Result<Vec<u8>, String> {
    match object.downcast_mut::<T>() {
        Some(this) => this.dispatch(method, args),
        None => Err(format!("the actor is not a {}", T::CLASS)),
    }
}

impl ActorCell {
    /// The cell of a new actor.
    pub fn new<T: ActorClass>(object: T) -> ActorCell {
        ActorCell {
            class: T::CLASS,
            size: std::mem::size_of::<T>() as u64,
            object: Mutex::new(Box::new(object)),
            dispatch: dispatch_as::<T>,
        }
    }

    /// The class's name.
    pub fn class(&self) -> &'static str {
        self.class
    }

    /// The bytes the object takes in place (what memory accounting counts).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Calls a method, after the calls before it have ended. A method that
    /// panics fails this call only: the actor goes on with whatever state
    /// the method left.
    ///
    /// # Errors
    /// The method's failure or panic, or why it could not be called.
    pub fn call(&self, method: &str, args: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        let mut object = self.object.lock().unwrap_or_else(|p| p.into_inner());
        let dispatch = self.dispatch;
        match catch_unwind(AssertUnwindSafe(|| dispatch(&mut **object, method, args))) {
            Ok(result) => result,
            Err(payload) => Err(panic_message(&*payload, method, self.class)),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send), method: &str, class: &str) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into());
    format!("{class}::{method} panicked: {text}")
}

impl std::fmt::Debug for ActorCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorCell({})", self.class)
    }
}

/// Encodes a method's argument or result.
///
/// # Errors
/// When the value does not serialise.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| format!("cannot encode a {}: {e}", std::any::type_name::<T>()))
}

/// Decodes argument `position` of method `method`.
///
/// # Errors
/// When the bytes are not a `T`, or the argument is missing.
pub fn decode_arg<T: DeserializeOwned>(args: &[Vec<u8>], position: usize, method: &str) -> Result<T, String> {
    let bytes = args.get(position).ok_or_else(|| format!("{method} takes more arguments than {}", args.len()))?;
    postcard::from_bytes(bytes).map_err(|e| {
        format!("argument {position} of {method} could not be decoded as {}: {e}", std::any::type_name::<T>())
    })
}

/// Checks that a call has as many arguments as the method takes.
///
/// # Errors
/// When it has another number.
pub fn check_arity(args: &[Vec<u8>], expected: usize, method: &str) -> Result<(), String> {
    if args.len() == expected {
        Ok(())
    } else {
        Err(format!("{method} takes {expected} arguments, {} were given", args.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        n: u64,
    }

    impl ActorClass for Counter {
        const CLASS: &'static str = "tests::Counter";
        fn dispatch(&mut self, method: &str, args: &[Vec<u8>]) -> Result<Vec<u8>, String> {
            match method {
                "add" => {
                    check_arity(args, 1, method)?;
                    self.n += decode_arg::<u64>(args, 0, method)?;
                    encode(&self.n)
                }
                "explode" => panic!("boom at {}", self.n),
                other => Err(format!("no method {other}")),
            }
        }
    }

    #[test]
    fn calls_keep_state_and_a_panic_fails_only_its_call() {
        let cell = ActorCell::new(Counter { n: 0 });
        let two = encode(&2u64).expect("encodes");
        assert_eq!(cell.call("add", std::slice::from_ref(&two)), encode(&2u64));
        let err = cell.call("explode", &[]).expect_err("panics");
        assert_eq!(err, "tests::Counter::explode panicked: boom at 2");
        assert_eq!(cell.call("add", &[two]), encode(&4u64), "the actor lives on");
        assert!(cell.call("add", &[]).expect_err("no argument").contains("takes 1 arguments, 0 were given"));
        assert!(cell.call("nope", &[]).is_err());
        assert_eq!((cell.class(), cell.size()), ("tests::Counter", 8));
    }
}
