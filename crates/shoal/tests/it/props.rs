//! Property tests: random DAGs on every executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use proptest::prelude::*;
use shoal::{Delayed, delayed};

use super::support::{LiveCounter, Tracked, clients};

/// A random DAG: `deps[i]` lists dependencies of node `i`, all `< i`.
fn dag(max: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1..max).prop_flat_map(|n| {
        (0..n)
            .map(|i| if i == 0 { Just(Vec::new()).boxed() } else { proptest::collection::vec(0..i, 0..4).boxed() })
            .collect::<Vec<_>>()
    })
}

fn mix(i: usize, deps: &[u64]) -> u64 {
    deps.iter().fold(i as u64 * 0x9e37_79b9 + 1, |acc, d| acc.rotate_left(7) ^ d.wrapping_mul(31))
}

fn sequential(deps: &[Vec<usize>]) -> Vec<u64> {
    let mut values: Vec<u64> = Vec::with_capacity(deps.len());
    for (i, ds) in deps.iter().enumerate() {
        let inputs: Vec<u64> = ds.iter().map(|&d| values[d]).collect();
        values.push(mix(i, &inputs));
    }
    values
}

struct Observed {
    runs: Vec<AtomicU32>,
    done: Vec<AtomicBool>,
    early: AtomicBool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_run_each_task_once_in_order_with_sequential_results(deps in dag(1500)) {
        let expected = sequential(&deps);
        let sinks: Vec<usize> = {
            let mut has_dependent = vec![false; deps.len()];
            deps.iter().flatten().for_each(|&d| has_dependent[d] = true);
            (0..deps.len()).filter(|&i| !has_dependent[i]).collect()
        };
        for client in clients() {
            let seen = Arc::new(Observed {
                runs: (0..deps.len()).map(|_| AtomicU32::new(0)).collect(),
                done: (0..deps.len()).map(|_| AtomicBool::new(false)).collect(),
                early: AtomicBool::new(false),
            });
            let structure = Arc::new(deps.clone());
            let mut nodes: Vec<Delayed<u64>> = Vec::with_capacity(deps.len());
            for (i, ds) in deps.iter().enumerate() {
                let (seen, structure) = (seen.clone(), structure.clone());
                let run = move |inputs: Vec<u64>| {
                    if structure[i].iter().any(|&d| !seen.done[d].load(Ordering::SeqCst)) {
                        seen.early.store(true, Ordering::SeqCst);
                    }
                    seen.runs[i].fetch_add(1, Ordering::SeqCst);
                    let out = mix(i, &inputs);
                    seen.done[i].store(true, Ordering::SeqCst);
                    out
                };
                let inputs: Vec<Delayed<u64>> = ds.iter().map(|&d| nodes[d].clone()).collect();
                nodes.push(delayed(run, (inputs,)));
            }
            let outputs: Vec<Delayed<u64>> = sinks.iter().map(|&i| nodes[i].clone()).collect();
            let values = shoal::Computable::compute_on(outputs.as_slice(), &client).expect("computes");
            for (&i, v) in sinks.iter().zip(&values) {
                prop_assert_eq!(*v, expected[i], "node {}", i);
            }
            for (i, r) in seen.runs.iter().enumerate() {
                prop_assert_eq!(r.load(Ordering::SeqCst), 1, "node {} ran a wrong number of times", i);
            }
            prop_assert!(!seen.early.load(Ordering::SeqCst), "a task started before a dependency finished");
            prop_assert_eq!(client.known_keys(), 0, "an intermediate result was kept");
        }
    }

    #[test]
    fn every_intermediate_is_freed_once_nothing_needs_it(deps in dag(400)) {
        for client in clients() {
            let counter = Arc::new(LiveCounter::default());
            let mut nodes: Vec<Delayed<Tracked>> = Vec::with_capacity(deps.len());
            for (i, ds) in deps.iter().enumerate() {
                let c = counter.clone();
                let run = move |inputs: Vec<Tracked>| Tracked::new(inputs.iter().map(|t| t.value).sum::<u64>() + i as u64, &c);
                let inputs: Vec<Delayed<Tracked>> = ds.iter().map(|&d| nodes[d].clone()).collect();
                nodes.push(delayed(run, (inputs,)));
            }
            let last = nodes[deps.len() - 1].clone();
            let out = last.compute_with(&client).expect("computes");
            prop_assert_eq!(counter.live(), 1, "only the output is alive after compute");
            drop(out);
            prop_assert_eq!(counter.live(), 0);
            prop_assert_eq!(client.known_keys(), 0);
        }
    }

    #[test]
    fn futures_on_random_dags_match_sequential_results(deps in dag(800)) {
        let expected = sequential(&deps);
        for client in clients() {
            let mut futures: Vec<shoal::Future<u64>> = Vec::with_capacity(deps.len());
            for (i, ds) in deps.iter().enumerate() {
                let inputs: Vec<shoal::Future<u64>> = ds.iter().map(|&d| futures[d].clone()).collect();
                let node = move |inputs: Vec<u64>| mix(i, &inputs);
                futures.push(client.submit(node, (inputs,)));
            }
            let values = client.gather(&futures).expect("all succeed");
            prop_assert_eq!(values, expected.clone());
        }
    }
}
