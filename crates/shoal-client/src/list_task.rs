//! The list task: a small task that takes every element of a list
//! argument as an argument of its own and returns them as a `Vec`, so the
//! task that reads the list depends on each element and gets them in order.

use std::any::type_name;
use std::sync::Arc;

use shoal_graph::{Arg, Func, Key, Task, TaskError, Token, Tokenizer, Value, take_arg};

use crate::args::ArgContext;

fn collect_values<T: Clone + Send + Sync + 'static>(args: Vec<Value>) -> Result<Value, TaskError> {
    let items = args.into_iter().enumerate().map(|(i, v)| take_arg::<T>(v, i)).collect::<Result<Vec<T>, _>>()?;
    Ok(Arc::new(items))
}

/// Names of list tasks start with this: a cluster client sends a list as a
/// `List` argument of its consumer instead of as a task of its own.
pub(crate) const LIST_FUNC_PREFIX: &str = "shoal::list<";

/// Whether `task` only collects its arguments into a list for another task
/// (a list of futures or delayed values passed as one argument).
pub fn is_list(task: &Task) -> bool {
    task.func.name().starts_with(LIST_FUNC_PREFIX)
}

fn list_func<T: Clone + Send + Sync + 'static>() -> Func {
    let name = format!("{LIST_FUNC_PREFIX}{}>", type_name::<T>());
    Func::new(&name, Some(Token::of_bytes(name.as_bytes())), Box::new(collect_values::<T>))
}

/// The list task over `keys`, and the key the calling task refers to.
pub(crate) fn list_task<T: Clone + Send + Sync + 'static>(keys: Vec<Key>, cx: &mut ArgContext) -> Task {
    let token = if cx.token.is_some() {
        let mut t = Tokenizer::new(b"list");
        for k in &keys {
            t.add_key(k);
        }
        t.finish()
    } else {
        Token::fresh()
    };
    let key = Key::scalar("list", token);
    if let Some(t) = &mut cx.token {
        t.add_key(&key);
    }
    Task { key, func: list_func::<T>(), args: keys.into_iter().map(Arg::Key).collect() }
}

/// An empty list is a plain value: no task to gather nothing.
pub(crate) fn empty_list<T: Send + Sync + 'static>(cx: &mut ArgContext) -> Arg {
    if let Some(t) = &mut cx.token {
        t.add_bytes(b"empty list");
    }
    Arg::Value(Arc::new(Vec::<T>::new()))
}
