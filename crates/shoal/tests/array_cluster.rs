//! Arrays on a LocalCluster of worker processes: the same graphs, run by
//! workers that find the array kernels by name and move chunks between them.
//! Its own test binary: a cluster client becomes the current client.

use shoal::LocalCluster;
use shoal::array::{self, RandomState, ndarray};

#[shoal::remote]
fn double_block(block: ndarray::ArrayD<f64>) -> ndarray::ArrayD<f64> {
    block.mapv(|v| v * 2.0)
}

#[test]
fn arrays_compute_the_same_on_worker_processes_as_on_threads() {
    let cluster = LocalCluster::builder().workers(2).threads_per_worker(1).build().expect("cluster starts");
    let remote = cluster.client().expect("client");
    let local = shoal::Client::builder().threads(2).build().expect("threads");
    let rng = RandomState::new(11);
    let x = rng.random(&[40, 30, 6], [10, 15, 3]);
    let y = rng.random(&[40, 30, 6], [10, 15, 3]);
    let seed = (array::arcsin(&x) + array::arccos(&y)).sum([1, 2]);
    let sliced = (&x * 2.0).slice(ndarray::s![5..25;3, .., 1]).transpose();
    let product = x.slice(ndarray::s![.., .., 0]).matmul(&y.slice(ndarray::s![.., .., 1]).transpose());
    let blocks = x.map_blocks(double_block).mean(0);
    let ints = rng.integers(0, 100, &[50, 7], [9, 4]);
    for (name, a) in [("seed", &seed), ("slice", &sliced), ("matmul", &product), ("map_blocks", &blocks)] {
        let on_cluster = a.compute_with(&remote).unwrap_or_else(|e| panic!("{name} on the cluster: {e}"));
        let on_threads = a.compute_with(&local).unwrap_or_else(|e| panic!("{name} on threads: {e}"));
        assert_eq!(on_cluster, on_threads, "{name}");
    }
    assert_eq!(
        ints.max(0).compute_with(&remote).expect("max on the cluster"),
        ints.max(0).compute_with(&local).expect("max on threads")
    );
    // Persisted chunks stay on the workers and feed later computations.
    let kept = x.persist(&remote).expect("persists");
    let total = kept.sum(..).compute_with(&remote).expect("sum of persisted");
    assert_eq!(total, x.sum(..).compute_with(&local).expect("sum on threads"));
}
