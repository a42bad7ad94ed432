//! What a function does to a whole [`Partition`] when a bag applies it to
//! each element: the loops over elements, written once per function with
//! its types known, so a bag's task runs them at full speed without knowing
//! the types itself.
//!
//! `#[shoal::remote]` builds these for every function of one or two
//! parameters and registers them with it; a bag on the threads executor
//! builds them from any closure the same way.
//!
//! ```
//! use shoal_graph::elements::Elements;
//! use shoal_graph::partition::Partition;
//!
//! fn double(x: i64) -> i64 { x * 2 }
//! let ops = Elements::unary(double);
//! let doubled = ops.map("double")?(Partition::from_vec(vec![1i64, 2, 3]))?;
//! assert_eq!(doubled.into_vec::<i64>()?, vec![2, 4, 6]);
//! # Ok::<(), shoal_graph::TaskError>(())
//! ```

use std::any::{Any, type_name};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::partition::{Distinct, Encoded, Partition};
use crate::{TaskError, TaskOutput};

/// A partition in, a partition out.
pub type PartitionOp = Arc<dyn Fn(Partition) -> Result<Partition, TaskError> + Send + Sync>;
/// A partition in; it back (decoded) and the encoding of each element's key.
pub type KeysOp = Arc<dyn Fn(Partition) -> Result<(Partition, Encoded), TaskError> + Send + Sync>;
/// An optional start value (a partition of one) and partitions to fold
/// into it; a partition of one value, or none when there was nothing.
pub type FoldOp = Arc<dyn Fn(Option<&Partition>, Vec<Partition>) -> Result<Partition, TaskError> + Send + Sync>;
/// [`FoldOp`] per key: the elements' keys are given in order; the distinct
/// keys and their folded values come back in first-seen order.
pub type FoldByOp =
    Arc<dyn Fn(Option<&Partition>, Vec<Partition>, &Encoded) -> Result<(Encoded, Partition), TaskError> + Send + Sync>;
/// Elements with a second argument: elementwise from another partition, or
/// one value for all (`broadcast`).
pub type MapWithOp = Arc<dyn Fn(Partition, &Partition, bool) -> Result<Partition, TaskError> + Send + Sync>;

/// The partition loops a function can serve in.
#[derive(Clone, Default)]
pub struct Elements {
    map: Option<PartitionOp>,
    filter: Option<PartitionOp>,
    flat_map: Option<PartitionOp>,
    keys: Option<KeysOp>,
    reduce_partition: Option<PartitionOp>,
    map_partition: Option<PartitionOp>,
    fold: Option<FoldOp>,
    fold_by: Option<FoldByOp>,
    map_with: Option<MapWithOp>,
}

/// Moves a value of type `S` into type `T` when they are the same type.
fn cast<S: 'static, T: 'static>(value: S) -> Result<T, TaskError> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .ok_or_else(|| TaskError::Failed(format!("a `{}` where a `{}` is needed", type_name::<S>(), type_name::<T>())))
}

fn same<S: 'static, T: 'static>() -> bool {
    std::any::TypeId::of::<S>() == std::any::TypeId::of::<T>()
}

fn missing(function: &str, use_: &str, shape: &str) -> TaskError {
    TaskError::Failed(format!("`{function}` cannot be used by `{use_}`: that takes a function {shape}"))
}

macro_rules! getter {
    ($($name:ident: $ty:ty, $shape:literal;)*) => {$(
        #[doc = concat!("The `", stringify!($name), "` loop; an error naming `function` when it ", $shape, " is not the function's shape.")]
        ///
        /// # Errors
        /// When the function does not have that shape.
        pub fn $name(&self, function: &str) -> Result<&$ty, TaskError> {
            self.$name.as_ref().ok_or_else(|| missing(function, stringify!($name), $shape))
        }
    )*};
}

impl Elements {
    getter! {
        map: PartitionOp, "of one element";
        filter: PartitionOp, "of one element that returns bool";
        flat_map: PartitionOp, "of one element that returns a Vec";
        keys: KeysOp, "of one element";
        reduce_partition: PartitionOp, "of a Vec of elements";
        map_partition: PartitionOp, "of a Vec of elements that returns a Vec";
        fold: FoldOp, "of an accumulator and an element";
        fold_by: FoldByOp, "of an accumulator and an element";
        map_with: MapWithOp, "of two parameters";
    }

    /// These loops, with those of `other` added.
    pub fn and(self, other: Elements) -> Elements {
        Elements {
            map: other.map.or(self.map),
            filter: other.filter.or(self.filter),
            flat_map: other.flat_map.or(self.flat_map),
            keys: other.keys.or(self.keys),
            reduce_partition: other.reduce_partition.or(self.reduce_partition),
            map_partition: other.map_partition.or(self.map_partition),
            fold: other.fold.or(self.fold),
            fold_by: other.fold_by.or(self.fold_by),
            map_with: other.map_with.or(self.map_with),
        }
    }

    /// The loops of a function of one element: `map`, `keys` (for
    /// `groupby`, `foldby`), and `filter` when it returns `bool`.
    pub fn unary<X, Out, F>(f: F) -> Elements
    where
        X: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        Out: TaskOutput,
        Out::Ok: Serialize,
        F: Fn(X) -> Out + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let g = f.clone();
        let map: PartitionOp = Arc::new(move |p: Partition| {
            let out = p.into_vec::<X>()?.into_iter().map(|x| g(x).into_task_result()).collect::<Result<Vec<_>, _>>()?;
            Ok(Partition::from_vec(out))
        });
        let g = f.clone();
        let keys: KeysOp = Arc::new(move |p: Partition| {
            let items = p.into_vec::<X>()?;
            let mut keys = Encoded::default();
            for x in &items {
                keys.push(&g(x.clone()).into_task_result()?)?;
            }
            Ok((Partition::from_vec(items), keys))
        });
        let filter: Option<PartitionOp> = same::<Out::Ok, bool>().then(|| {
            let g = f.clone();
            Arc::new(move |p: Partition| {
                let mut kept = Vec::new();
                for x in p.into_vec::<X>()? {
                    if cast::<Out::Ok, bool>(g(x.clone()).into_task_result()?)? {
                        kept.push(x);
                    }
                }
                Ok(Partition::from_vec(kept))
            }) as PartitionOp
        });
        Elements { map: Some(map), keys: Some(keys), filter, ..Elements::default() }
    }

    /// `flat_map` for a function of one element that returns a `Vec`.
    pub fn flat_map_of<X, Z, F>(f: F) -> Elements
    where
        X: DeserializeOwned + Clone + Send + Sync + 'static,
        Z: Serialize + Send + Sync + 'static,
        F: Fn(X) -> Vec<Z> + Send + Sync + 'static,
    {
        let flat_map: PartitionOp = Arc::new(move |p: Partition| {
            let out: Vec<Z> = p.into_vec::<X>()?.into_iter().flat_map(&f).collect();
            Ok(Partition::from_vec(out))
        });
        Elements { flat_map: Some(flat_map), ..Elements::default() }
    }

    /// The loops of a function of a whole partition (`Vec<E>`): a
    /// `reduction` step, and `map_partitions` when it returns a `Vec`
    /// (see [`Elements::map_partitions_of`]).
    pub fn partition_of<E, Out, F>(f: F) -> Elements
    where
        E: DeserializeOwned + Clone + Send + Sync + 'static,
        Out: TaskOutput,
        Out::Ok: Serialize,
        F: Fn(Vec<E>) -> Out + Send + Sync + 'static,
    {
        let reduce: PartitionOp =
            Arc::new(move |p: Partition| Ok(Partition::from_vec(vec![f(p.into_vec::<E>()?).into_task_result()?])));
        Elements { reduce_partition: Some(reduce), ..Elements::default() }
    }

    /// `map_partitions` for a function from a partition's `Vec<E>` to a `Vec<Z>`.
    pub fn map_partitions_of<E, Z, Out, F>(f: F) -> Elements
    where
        E: DeserializeOwned + Clone + Send + Sync + 'static,
        Z: Serialize + Send + Sync + 'static,
        Out: TaskOutput<Ok = Vec<Z>>,
        F: Fn(Vec<E>) -> Out + Send + Sync + 'static,
    {
        let map: PartitionOp =
            Arc::new(move |p: Partition| Ok(Partition::from_vec(f(p.into_vec::<E>()?).into_task_result()?)));
        Elements { map_partition: Some(map), ..Elements::default() }
    }

    /// The loops of a function of two parameters: `fold` and `foldby` when
    /// it is `(accumulator, element) -> accumulator`, and `map` with a
    /// second argument.
    pub fn binary<A, B, Out, F>(f: F) -> Elements
    where
        A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        B: DeserializeOwned + Clone + Send + Sync + 'static,
        Out: TaskOutput,
        Out::Ok: Serialize,
        F: Fn(A, B) -> Out + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let g = f.clone();
        let map_with: MapWithOp = Arc::new(move |p: Partition, other: &Partition, broadcast: bool| {
            let xs = p.into_vec::<A>()?;
            let ys = other.clone().into_vec::<B>()?;
            let out: Result<Vec<_>, TaskError> = if broadcast {
                let y = ys.into_iter().next().ok_or_else(|| TaskError::Failed("no value to map with".into()))?;
                xs.into_iter().map(|x| g(x, y.clone()).into_task_result()).collect()
            } else {
                if xs.len() != ys.len() {
                    return Err(TaskError::Failed(format!(
                        "map over two bags with partitions of {} and {} elements: zip bags of the same lengths",
                        xs.len(),
                        ys.len()
                    )));
                }
                xs.into_iter().zip(ys).map(|(x, y)| g(x, y).into_task_result()).collect()
            };
            Ok(Partition::from_vec(out?))
        });
        let mut ops = Elements { map_with: Some(map_with), ..Elements::default() };
        if !same::<Out::Ok, A>() {
            return ops;
        }
        let g = f.clone();
        let step = move |acc: Option<A>, b: B, init: &Option<A>| -> Result<A, TaskError> {
            match acc.or_else(|| init.clone()) {
                Some(a) => cast::<Out::Ok, A>(g(a, b).into_task_result()?),
                None => cast::<B, A>(b),
            }
        };
        let step = Arc::new(step);
        let fold_step = step.clone();
        ops.fold = Some(Arc::new(move |init: Option<&Partition>, parts: Vec<Partition>| {
            let init = first::<A>(init)?;
            let mut acc: Option<A> = None;
            for part in parts {
                for b in part.into_vec::<B>()? {
                    acc = Some(fold_step(acc.take(), b, &init)?);
                }
            }
            Ok(Partition::from_vec(acc.or(init).into_iter().collect::<Vec<A>>()))
        }));
        ops.fold_by = Some(Arc::new(move |init: Option<&Partition>, parts: Vec<Partition>, keys: &Encoded| {
            let init = first::<A>(init)?;
            let mut distinct = Distinct::default();
            let mut accs: Vec<Option<A>> = Vec::new();
            let mut keys_in_order = keys.iter();
            for part in parts {
                for b in part.into_vec::<B>()? {
                    let key = keys_in_order
                        .next()
                        .ok_or_else(|| TaskError::Failed("fewer keys than elements in a foldby".into()))?;
                    let acc = distinct.value(key, &mut accs, || None);
                    *acc = Some(step(acc.take(), b, &init)?);
                }
            }
            let values: Vec<A> = accs.into_iter().flatten().collect();
            Ok((distinct.into_keys(), Partition::from_vec(values)))
        }));
        ops
    }
}

/// The value of a partition of one, if there is a partition.
fn first<A: DeserializeOwned + Clone + Send + Sync + 'static>(p: Option<&Partition>) -> Result<Option<A>, TaskError> {
    match p {
        Some(p) => Ok(p.clone().into_vec::<A>()?.into_iter().next()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    fn length(acc: usize, s: String) -> usize {
        acc + s.len()
    }

    #[test]
    fn filters_need_a_predicate() {
        let ops = Elements::unary(|x: i64| x % 2 == 0);
        let kept = ops.filter("even").expect("a predicate")(Partition::from_vec(vec![1i64, 2, 3, 4])).expect("runs");
        assert_eq!(kept.into_vec::<i64>().expect("i64"), vec![2, 4]);
        let err = Elements::unary(|x: i64| x).filter("id").err().expect("not a predicate");
        assert!(err.to_string().contains("`id` cannot be used by `filter`"), "{err}");
    }

    #[test]
    fn folds_start_from_the_first_element_or_the_initial_value() {
        let ops = Elements::binary(add);
        let parts = vec![Partition::from_vec(vec![1i64, 2]), Partition::from_vec(Vec::<i64>::new())];
        let total = ops.fold("add").expect("a binop")(None, parts.clone()).expect("runs");
        assert_eq!(total.into_vec::<i64>().expect("i64"), vec![3]);
        let init = Partition::from_vec(vec![10i64]);
        let total = ops.fold("add").expect("a binop")(Some(&init), parts).expect("runs");
        assert_eq!(total.into_vec::<i64>().expect("i64"), vec![13]);
        let empty = ops.fold("add").expect("a binop")(None, vec![]).expect("runs");
        assert!(empty.is_empty());
        // An accumulator of another type than the elements needs a start.
        let ops = Elements::binary(length);
        let err = ops.fold("length").expect("a binop")(None, vec![Partition::from_vec(vec!["ab".to_string()])])
            .expect_err("no start value");
        assert!(err.to_string().contains("usize"), "{err}");
    }

    #[test]
    fn fold_by_groups_by_key_bytes() {
        let keys_of = Elements::unary(|x: i64| x % 3);
        let (items, keys) =
            keys_of.keys("mod3").expect("keys")(Partition::from_vec((0..10i64).collect::<Vec<_>>())).expect("runs");
        let (distinct, sums) =
            Elements::binary(add).fold_by("add").expect("a binop")(None, vec![items], &keys).expect("runs");
        assert_eq!(distinct.decode_all::<i64>().expect("keys"), vec![0, 1, 2]);
        assert_eq!(sums.into_vec::<i64>().expect("sums"), vec![18, 12, 15]);
    }
}
