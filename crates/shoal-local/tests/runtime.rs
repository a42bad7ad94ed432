//! The runtime through its own API: wiring by key, shutdown, determinism.

use std::sync::{Arc, Mutex};

use shoal_graph::{Arg, Func, Key, Task, TaskError, Token, Value};
use shoal_local::{FailureKind, LocalDeps, Phase, Runtime, Submission};

fn func(name: &str, f: impl Fn(Vec<Value>) -> Result<Value, TaskError> + Send + Sync + 'static) -> Func {
    Func::new(name, None, Box::new(f))
}

fn constant(v: u64) -> Func {
    func("constant", move |_| Ok(Arc::new(v) as Value))
}

fn sum() -> Func {
    func("sum", |args| Ok(Arc::new(args.iter().map(|a| *a.downcast_ref::<u64>().unwrap_or(&0)).sum::<u64>()) as Value))
}

fn key(i: u128) -> Key {
    Key::scalar("k", Token(i))
}

#[test]
fn an_unknown_key_fails_the_task_naming_the_key() {
    let rt = Runtime::threads(2).expect("pool");
    let task = Task { key: key(1), func: sum(), args: vec![Arg::Key(key(99))] };
    let handles = rt.submit([Submission::new(task).held()]);
    let failure = handles[0].wait().expect_err("unknown dependency");
    assert!(matches!(&failure.kind, FailureKind::UnknownDependency(k) if *k == key(99)));
    assert!(failure.to_string().contains(&key(99).to_string()));
}

#[test]
fn in_batch_links_keep_an_early_result_for_a_late_consumer() {
    let rt = Runtime::threads(2).expect("pool");
    let mut batch = vec![Submission {
        consumers_in_batch: 1,
        ..Submission::new(Task { key: key(1), func: constant(7), args: vec![] })
    }];
    for i in 0..5000 {
        batch.push(Submission::new(Task { key: key(10 + i), func: constant(1), args: vec![] }));
    }
    let mut local = LocalDeps::new();
    local.push(Some(0));
    batch.push(Submission {
        local_deps: local,
        ..Submission::new(Task { key: key(2), func: sum(), args: vec![Arg::Key(key(1))] }).held()
    });
    let handles = rt.submit(batch);
    let out = handles[0].wait().expect("the early result was kept");
    assert_eq!(*out.downcast::<u64>().expect("u64"), 7);
    assert!(rt.handle(&key(1)).is_none(), "read by its only consumer, the early result is gone");
}

#[test]
fn pending_tasks_fail_with_shutdown_when_the_pool_goes() {
    let rt = Runtime::threads(1).expect("pool");
    let gate = Arc::new(std::sync::Barrier::new(2));
    let g = gate.clone();
    let (started_tx, started) = std::sync::mpsc::channel();
    let started_tx = Mutex::new(started_tx);
    let blocker = Task {
        key: key(1),
        func: func("block", move |_| {
            started_tx.lock().map_err(|_| TaskError::Failed("poisoned".into()))?.send(()).ok();
            g.wait();
            Ok(Arc::new(0u64) as Value)
        }),
        args: vec![],
    };
    let queued = Task { key: key(2), func: constant(1), args: vec![] };
    let handles = rt.submit([Submission::new(blocker).held(), Submission::new(queued).held()]);
    started.recv().expect("the blocking task starts");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        gate.wait();
    });
    drop(rt);
    releaser.join().expect("releaser");
    assert_eq!(handles[0].phase(), Phase::Memory, "the running task finishes");
    let failure = handles[1].wait().expect_err("never ran");
    assert!(matches!(failure.kind, FailureKind::Shutdown));
}

#[test]
fn the_sync_executor_runs_in_the_same_order_every_time() {
    let order_of_run = || {
        let rt = Runtime::sync();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut batch = Vec::new();
        for i in 0..50u128 {
            let s = seen.clone();
            let args = if i >= 10 { vec![Arg::Key(key(i % 10))] } else { vec![] };
            let f = func("record", move |_| {
                s.lock().map_err(|_| TaskError::Failed("poisoned".into()))?.push(i);
                Ok(Arc::new(i as u64) as Value)
            });
            batch.push(Submission::new(Task { key: key(i), func: f, args }).held());
        }
        let handles = rt.submit(batch);
        handles.last().expect("tasks").wait().expect("runs");
        for h in &handles {
            h.wait().expect("runs");
        }
        let recorded = seen.lock().expect("lock");
        recorded.clone()
    };
    let first = order_of_run();
    assert_eq!(first.len(), 50);
    assert_eq!(first, order_of_run());
}
