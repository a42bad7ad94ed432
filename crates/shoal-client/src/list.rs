//! Lists of futures or delayed values as one argument: `sum(results)`,
//! each list a list task (see `list_task`).

use std::sync::Arc;

use shoal_graph::{Arg, Tokenizer};

use crate::args::{ArgContext, IntoArg};
use crate::delayed::{Delayed, DelayedNode};
use crate::future::Future;
use crate::list_task::{empty_list, list_task};

impl<T: Clone + Send + Sync + 'static> IntoArg<Vec<T>> for &[Future<T>] {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        if self.is_empty() {
            return empty_list::<T>(cx);
        }
        let task = list_task::<T>(self.iter().map(|f| f.key().clone()).collect(), cx);
        let key = task.key.clone();
        if cx.keep {
            // A lazy call: the list becomes a lazy task holding the futures.
            let deps = self.iter().map(|f| Arc::new(f.clone()) as Arc<dyn std::any::Any + Send + Sync>).collect();
            cx.keep_alive.push(Arc::new(DelayedNode::new(task, 0, deps)));
        } else {
            cx.pre_tasks.push(task);
        }
        Arg::Key(key)
    }
}

impl<T: Clone + Send + Sync + 'static> IntoArg<Vec<T>> for Vec<Future<T>> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        self.as_slice().into_arg(cx)
    }
}

impl<T: Clone + Send + Sync + 'static> IntoArg<Vec<T>> for &Vec<Future<T>> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        self.as_slice().into_arg(cx)
    }
}

impl<T: Clone + Send + Sync + 'static> IntoArg<Vec<T>> for &[Delayed<T>] {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        if self.is_empty() {
            return empty_list::<T>(cx);
        }
        let mut inner = ArgContext::keeping(cx.token.as_ref().map(|_| Tokenizer::new(b"")));
        let task = list_task::<T>(self.iter().map(|d| d.key().clone()).collect(), &mut inner);
        if let (Some(t), Some(_)) = (&mut cx.token, &inner.token) {
            t.add_key(&task.key);
        }
        let key = task.key.clone();
        let deps = self.iter().map(|d| d.node().clone() as Arc<dyn std::any::Any + Send + Sync>).collect();
        cx.keep_alive.push(Arc::new(DelayedNode::new(task, 0, deps)));
        Arg::Key(key)
    }
}

impl<T: Clone + Send + Sync + 'static> IntoArg<Vec<T>> for Vec<Delayed<T>> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        self.as_slice().into_arg(cx)
    }
}

impl<T: Clone + Send + Sync + 'static> IntoArg<Vec<T>> for &Vec<Delayed<T>> {
    fn into_arg(self, cx: &mut ArgContext) -> Arg {
        self.as_slice().into_arg(cx)
    }
}
