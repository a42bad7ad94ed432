//! A task graph: tasks by key, with dependency and dependent lists.
//!
//! Every operation here is O(tasks + edges): graphs of millions of tasks are
//! built, culled and ordered without quadratic steps.

use crate::key::{Key, KeyHashMap};
use crate::task::Task;

/// A graph that cannot be run as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A task depends on itself through other tasks.
    #[error("the graph has a cycle through {key}")]
    Cycle {
        /// A key on the cycle.
        key: Key,
    },
}

/// A set of tasks indexed by key.
///
/// Arguments may refer to keys outside the graph (results that already exist,
/// such as futures); those are *external* dependencies.
#[derive(Clone, Default, Debug)]
pub struct Graph {
    tasks: Vec<Task>,
    index: KeyHashMap<usize>,
}

/// A dependency of a task: another task of this graph, or a key outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dep<'a> {
    /// The task at this position of the graph.
    Internal(usize),
    /// A key the graph does not contain.
    External(&'a Key),
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// An empty graph with room for `n` tasks.
    pub fn with_capacity(n: usize) -> Graph {
        Graph { tasks: Vec::with_capacity(n), index: KeyHashMap::with_capacity_and_hasher(n, Default::default()) }
    }

    /// Adds a task; returns `false` (and keeps the first) when its key is
    /// already present, since equal keys name the same computation.
    pub fn insert(&mut self, task: Task) -> bool {
        if self.index.contains_key(&task.key) {
            return false;
        }
        self.index.insert(task.key.clone(), self.tasks.len());
        self.tasks.push(task);
        true
    }

    /// The number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are no tasks.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The tasks in insertion order.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Consumes the graph into its tasks, in insertion order.
    pub fn into_tasks(self) -> Vec<Task> {
        self.tasks
    }

    /// The position of a key's task.
    pub fn position(&self, key: &Key) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// Whether the graph has a task for this key.
    pub fn contains(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    /// The task for a key.
    pub fn get(&self, key: &Key) -> Option<&Task> {
        self.position(key).map(|i| &self.tasks[i])
    }

    /// The dependencies of task `i`, without repeats, in argument order.
    pub fn dependencies(&self, i: usize) -> Vec<Dep<'_>> {
        let mut out: Vec<Dep<'_>> = Vec::new();
        for key in self.tasks[i].dependencies() {
            let dep = match self.index.get(key) {
                Some(&j) => Dep::Internal(j),
                None => Dep::External(key),
            };
            if !out.contains(&dep) {
                out.push(dep);
            }
        }
        out
    }

    /// Keys referred to by some task but not in the graph.
    pub fn external_keys(&self) -> Vec<&Key> {
        let mut seen = std::collections::HashSet::<&Key, crate::key::KeyBuildHasher>::default();
        let mut out = Vec::new();
        for task in &self.tasks {
            for key in task.dependencies() {
                if !self.index.contains_key(key) && seen.insert(key) {
                    out.push(key);
                }
            }
        }
        out
    }

    /// For each task, the positions of the tasks that depend on it (each once).
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.tasks.len()];
        for i in 0..self.tasks.len() {
            for dep in self.dependencies(i) {
                if let Dep::Internal(j) = dep {
                    out[j].push(i);
                }
            }
        }
        out
    }

    /// The subgraph that `outputs` need: those tasks and everything they
    /// depend on, transitively. Keys of `outputs` not in the graph are ignored.
    pub fn cull(&self, outputs: &[Key]) -> Graph {
        let mut keep = vec![false; self.tasks.len()];
        let mut stack: Vec<usize> = outputs.iter().filter_map(|k| self.position(k)).collect();
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut keep[i], true) {
                continue;
            }
            for key in self.tasks[i].dependencies() {
                if let Some(j) = self.position(key)
                    && !keep[j]
                {
                    stack.push(j);
                }
            }
        }
        let n = keep.iter().filter(|k| **k).count();
        let mut out = Graph::with_capacity(n);
        for (task, keep) in self.tasks.iter().zip(keep) {
            if keep {
                out.insert(task.clone());
            }
        }
        out
    }

    /// A memory-friendly execution order: positions of all tasks, each after
    /// its dependencies.
    ///
    /// It is a depth-first post-order from the outputs (the tasks nothing
    /// depends on), taking the deepest dependency first: one branch is finished
    /// before the next is started, so each intermediate result can be freed soon
    /// after it was made, and a reduction tree holds O(depth) results at a time
    /// rather than a whole level.
    ///
    /// # Errors
    /// [`GraphError::Cycle`] naming a task that depends on itself through others.
    pub fn order(&self) -> Result<Vec<usize>, GraphError> {
        let n = self.tasks.len();
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                self.dependencies(i)
                    .into_iter()
                    .filter_map(|d| match d {
                        Dep::Internal(j) => Some(j),
                        Dep::External(_) => None,
                    })
                    .collect()
            })
            .collect();
        let mut has_dependent = vec![false; n];
        for ds in &deps {
            for &j in ds {
                has_dependent[j] = true;
            }
        }
        let height = heights(&deps);

        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        const DONE: u8 = 2;
        let mut mark = vec![NEW; n];
        let mut order = Vec::with_capacity(n);
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let mut sorted_deps: Vec<Vec<usize>> = deps;
        for ds in &mut sorted_deps {
            // Deepest branch first: its partial results then live the shortest.
            ds.sort_by_key(|&j| std::cmp::Reverse(height[j]));
        }
        // Roots in insertion order, then anything left (all reachable from roots).
        let roots = (0..n).filter(|&i| !has_dependent[i]).chain(0..n);
        for root in roots {
            if mark[root] != NEW {
                continue;
            }
            mark[root] = OPEN;
            stack.push((root, 0));
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&child) = sorted_deps[node].get(*next) {
                    *next += 1;
                    if mark[child] == NEW {
                        mark[child] = OPEN;
                        stack.push((child, 0));
                    } else if mark[child] == OPEN {
                        return Err(GraphError::Cycle { key: self.tasks[child].key.clone() });
                    }
                } else {
                    mark[node] = DONE;
                    order.push(node);
                    stack.pop();
                }
            }
        }
        Ok(order)
    }

    /// The graph in Graphviz DOT, Dask style: a circle per task labelled with
    /// its function, a box per result labelled with its key, edges for data flow.
    pub fn to_dot(&self) -> String {
        crate::dot::to_dot(self)
    }
}

/// The longest path from each task down to a task without dependencies.
fn heights(deps: &[Vec<usize>]) -> Vec<u32> {
    let n = deps.len();
    let mut height = vec![0u32; n];
    // 0 new, 1 on the stack, 2 done; an edge back to the stack (a cycle) is
    // skipped here and reported by `order`.
    let mut mark = vec![0u8; n];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..n {
        if mark[start] != 0 {
            continue;
        }
        mark[start] = 1;
        stack.push((start, 0));
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&child) = deps[node].get(*next) {
                *next += 1;
                if mark[child] == 0 {
                    mark[child] = 1;
                    stack.push((child, 0));
                }
            } else {
                height[node] = deps[node].iter().map(|&c| height[c] + 1).max().unwrap_or(0);
                mark[node] = 2;
                stack.pop();
            }
        }
    }
    height
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::key::Token;
    use crate::task::{Arg, Func, Value};

    fn func() -> Func {
        Func::new("test::f", None, Box::new(|_| Ok(Arc::new(0u8) as Value)))
    }

    fn key(i: usize) -> Key {
        Key::scalar("t", Token(i as u128 + 1))
    }

    /// A graph whose task `i` depends on the tasks in `deps[i]` (all `< i`).
    fn build(deps: &[Vec<usize>]) -> Graph {
        let mut g = Graph::new();
        for (i, ds) in deps.iter().enumerate() {
            let args = ds.iter().map(|&d| Arg::Key(key(d))).collect();
            g.insert(Task { key: key(i), func: func(), args });
        }
        g
    }

    fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..300).prop_flat_map(|n| {
            (0..n)
                .map(|i| if i == 0 { Just(Vec::new()).boxed() } else { proptest::collection::vec(0..i, 0..4).boxed() })
                .collect::<Vec<_>>()
        })
    }

    fn ancestors(deps: &[Vec<usize>], outputs: &[usize]) -> Vec<bool> {
        let mut keep = vec![false; deps.len()];
        let mut stack = outputs.to_vec();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut keep[i], true) {
                stack.extend(&deps[i]);
            }
        }
        keep
    }

    proptest! {
        #[test]
        fn order_is_a_topological_permutation(deps in dag()) {
            let g = build(&deps);
            let order = g.order().expect("acyclic");
            prop_assert_eq!(order.len(), deps.len());
            let mut position = vec![usize::MAX; deps.len()];
            for (p, &i) in order.iter().enumerate() {
                prop_assert_eq!(position[i], usize::MAX, "task {} ordered twice", i);
                position[i] = p;
            }
            for (i, ds) in deps.iter().enumerate() {
                for &d in ds {
                    prop_assert!(position[d] < position[i], "{} runs before its dependency {}", i, d);
                }
            }
        }

        #[test]
        fn cull_keeps_exactly_what_outputs_need(deps in dag(), picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..4)) {
            let g = build(&deps);
            let outputs: Vec<usize> = picks.iter().map(|p| p.index(deps.len())).collect();
            let keys: Vec<Key> = outputs.iter().map(|&i| key(i)).collect();
            let culled = g.cull(&keys);
            let keep = ancestors(&deps, &outputs);
            prop_assert_eq!(culled.len(), keep.iter().filter(|k| **k).count());
            for (i, k) in keep.iter().enumerate() {
                prop_assert_eq!(culled.contains(&key(i)), *k);
            }
            prop_assert!(culled.external_keys().is_empty());
        }

        #[test]
        fn dependents_mirror_dependencies(deps in dag()) {
            let g = build(&deps);
            let dependents = g.dependents();
            for (i, ds) in deps.iter().enumerate() {
                let mut unique = ds.clone();
                unique.sort_unstable();
                unique.dedup();
                for d in unique {
                    prop_assert_eq!(dependents[d].iter().filter(|&&x| x == i).count(), 1);
                }
            }
        }
    }

    #[test]
    fn a_cycle_is_reported_with_a_key_on_it() {
        let mut g = Graph::new();
        g.insert(Task { key: key(0), func: func(), args: vec![Arg::Key(key(1))] });
        g.insert(Task { key: key(1), func: func(), args: vec![Arg::Key(key(0))] });
        let err = g.order().expect_err("cycle");
        let GraphError::Cycle { key: k } = err;
        assert!(k == key(0) || k == key(1));
    }

    #[test]
    fn order_finishes_a_branch_before_the_next() {
        // ((l0 + l1) + (l2 + l3)): the first sum runs before l2 and l3 start.
        let deps = vec![vec![], vec![], vec![0, 1], vec![], vec![], vec![3, 4], vec![2, 5]];
        let order = build(&deps).order().expect("acyclic");
        let pos = |i: usize| order.iter().position(|&x| x == i).expect("present");
        assert!(pos(2) < pos(3) && pos(2) < pos(4));
    }

    #[test]
    fn dot_output_is_exact() {
        let mut g = Graph::new();
        g.insert(Task { key: key(0), func: func(), args: vec![Arg::Value(Arc::new(1u8))] });
        g.insert(Task {
            key: key(1),
            func: func(),
            args: vec![Arg::Key(key(0)), Arg::Key(Key::scalar("ext", Token(9)))],
        });
        let expected = "digraph shoal {
  rankdir=BT;
  node [fontname=\"Helvetica\"];
  f0 [shape=circle, label=\"f\"];
  d0 [shape=box, label=\"t-00000000\"];
  f0 -> d0;
  f1 [shape=circle, label=\"f\"];
  d1 [shape=box, label=\"t-00000000\"];
  f1 -> d1;
  d0 -> f1;
  \"ext-00000000000000000000000000000009\" [shape=box, style=dashed];
  \"ext-00000000000000000000000000000009\" -> f1;
}
";
        assert_eq!(g.to_dot(), expected);
    }

    #[test]
    fn duplicate_keys_keep_the_first_task() {
        let mut g = Graph::new();
        assert!(g.insert(Task { key: key(0), func: func(), args: vec![] }));
        assert!(!g.insert(Task { key: key(0), func: func(), args: vec![Arg::Key(key(5))] }));
        assert_eq!(g.len(), 1);
        assert!(g.external_keys().is_empty());
    }
}
