#!/usr/bin/env python3
"""Dask and Ray on the same work as `shoal bench`, side by side.

    peers.py bench NAME --peer dask|ray [--quick] [--runs R] [--shoal-lines FILE]
        Runs every peer variant of one shoal benchmark, each measurement in a
        fresh process, and prints one JSON line per variant and parameter set
        (the median of R runs), like `shoal bench` does.
    peers.py table FILE
        Reads the JSON lines of shoal and of the peers from FILE and prints
        the Markdown table (figures and same-run ratios).
    peers.py child PEER VARIANT PARAMS
        Internal: one measurement in this process; prints one JSON object.

The parameters are shoal's own: taken from shoal's JSON lines of the same run
when --shoal-lines is given (so they follow the Rust code), otherwise from a
copy of the tables in crates/shoal-bench/src/*.rs. Where a peer would take
minutes at shoal's task count, the peer runs a smaller n (stated in the line
and the table) and rates are compared.

Nothing heavy is imported at module level: Dask's LocalCluster starts its
worker processes with `spawn`, and they import this file again.
"""

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# How long one measurement may take before it is killed.
CHILD_TIMEOUT_S = 900

# --------------------------------------------------------------------------
# shoal's parameter sets (a copy of crates/shoal-bench/src/*.rs), used
# only when shoal's own lines of the run are not given.


def shoal_params(name, quick):
    if name == "array-seed":
        n = 1_000 if quick else 10_000
        return [{"n": n, "executor": "threads"}, {"n": n, "executor": "cluster"}]
    if name == "array-chunks":
        return [{"chunk": 1000}, {"chunk": 100_000}, {"chunk": "plain"}]
    if name == "threads-noop":
        return [{"n": 100_000}] if quick else [{"n": 100_000}, {"n": 1_000_000}]
    if name == "cluster-noop":
        n = 10_000 if quick else 100_000
        return [
            {"n": n, "workers": 2, "threads": 1, "processes": True},
            {"n": n, "workers": 2, "threads": 1, "processes": False},
        ]
    if name == "cluster-chain":
        return [{"n": 200 if quick else 2_000, "workers": 2}]
    if name == "net-rtt":
        return [{"round_trips": 2_000 if quick else 20_000, "bytes": 64}]
    if name == "cluster-transfer":
        mb = 50 if quick else 200
        return [{"mb": mb, "workers": 2, "via": "read"}, {"mb": mb, "workers": 2, "via": "tcp"}]
    if name == "cluster-startup":
        return [{"workers": 2, "processes": True}]
    if name == "actor-roundtrip":
        return [{"n": 1_000 if quick else 10_000}]
    if name == "actor-throughput":
        n = 10_000 if quick else 100_000
        return [{"n": n, "actors": 1}, {"n": n, "actors": 8}]
    if name == "ray-tasks":
        return [{"n": 10_000 if quick else 100_000}]
    if name == "bag-foldby":
        return [{"n": 200_000 if quick else 2_000_000, "npartitions": 20}]
    if name == "bag-wordcount":
        mb, files = (64, 8) if quick else (1024, 64)
        return [{"mb": mb, "files": files, "via": v} for v in ("bag", "bag-flat_map", "rust")]
    if name == "bag-groupby":
        return [{"n": 1_000_000 if quick else 10_000_000, "keys": 100_000, "npartitions": 20}]
    raise SystemExit(f"peers.py: no peer version of benchmark {name!r}")


BENCHMARKS = [
    "array-seed",
    "array-chunks",
    "threads-noop",
    "cluster-noop",
    "cluster-chain",
    "net-rtt",
    "cluster-transfer",
    "cluster-startup",
    "actor-roundtrip",
    "actor-throughput",
    "ray-tasks",
    "bag-foldby",
    "bag-wordcount",
    "bag-groupby",
]

# --------------------------------------------------------------------------
# The peer versions of each parameter set.
#
# plan(name, peer, shoal_params, quick) -> list of entries, each either
#   {"variant": str, "params": {...}, "note": str}            a measurement
#   {"variant": str, "na": str}                                 not applicable
# The caps on n: the peer's rate at shoal's n would take minutes.

CAPS = {
    # (peer, variant): (full, quick) largest n the peer runs
    ("dask", "client-threads"): (5_000, 2_000),
    ("dask", "delayed-threads"): (5_000, 2_000),
    ("dask", "raw-graph-threads"): (100_000, 20_000),
    ("dask", "localcluster-processes"): (5_000, 2_000),
    ("dask", "localcluster-threads"): (5_000, 2_000),
    ("ray", "tasks"): (10_000, 3_000),
    ("dask", "chain"): (2_000, 200),
    ("ray", "chain"): (2_000, 200),
    ("dask", "rtt"): (1_000, 200),
    ("ray", "rtt"): (2_000, 400),
    # Actors: about 1.2 ms (Dask) and 0.7 ms (Ray) per awaited call here;
    # calls in flight at once, about 600/s (Dask) and 3 000-4 500/s (Ray,
    # whose driver holds some 20-30 kB per pending call).
    ("dask", "actor-roundtrip"): (2_000, 400),
    ("ray", "actor-roundtrip"): (2_000, 400),
    ("dask", "actor-throughput"): (5_000, 2_000),
    ("ray", "actor-throughput"): (10_000, 3_000),
    # Bags: Dask's groupby shuffles some 0.3 M pairs/s here; its word
    # count reads some 10-20 MB/s per worker (files, of the corpus's).
    ("dask", "bag-groupby"): (2_000_000, 500_000),
    ("dask", "bag-wordcount"): (16, 8),
}


def cap(peer, variant, n, quick):
    full, q = CAPS[(peer, variant)]
    return min(n, q if quick else full)


RAY_NO_BAGS = "Ray has no bag collection (Ray Data is a table library, not dask.bag's equivalent)"
RAY_NO_THREADS = "Ray has no in-process threads executor; its tasks run in worker processes (see cluster-noop, processes=true)"
RAY_NO_ARRAYS = "Ray has no chunked-array library (dask.array's equivalent)"


def plan(name, peer, sp, quick):
    if name == "array-seed":
        if peer == "ray":
            return [{"variant": "-", "na": RAY_NO_ARRAYS}]
        if sp["executor"] == "threads":
            return [
                {"variant": "threaded scheduler, chunks (1000,1000,5)",
                 "params": dict(sp, scheduler="threads", chunks=[1000, 1000, 5])},
                {"variant": "threaded scheduler, chunks \"auto\" (the tutorial's)",
                 "params": dict(sp, scheduler="threads", chunks="auto")},
            ]
        return [{"variant": "LocalCluster 2 processes x 1 thread, chunks (1000,1000,5)",
                 "params": dict(sp, scheduler="cluster", chunks=[1000, 1000, 5])}]
    if name == "array-chunks":
        if peer == "ray":
            return [{"variant": "-", "na": RAY_NO_ARRAYS}]
        if sp["chunk"] == "plain":
            return [{"variant": "NumPy: np.random.random(10**7).sum()", "params": dict(sp)}]
        return [{"variant": "dask.array, threaded scheduler", "params": dict(sp)}]
    if name == "threads-noop":
        if peer == "ray":
            return [{"variant": "-", "na": RAY_NO_THREADS}]
        return [
            {"variant": "Client(processes=False): map + gather",
             "params": {"n": cap("dask", "client-threads", sp["n"], quick), "api": "client"}},
            {"variant": "dask.compute(*[delayed(f)(i) ...]), threaded scheduler",
             "params": {"n": cap("dask", "delayed-threads", sp["n"], quick), "api": "delayed"},
             "note": "grows as n squared in this Dask (graph merging): 20 000 took 24 s, 100 000 over 5 min"},
            {"variant": "a raw graph dict, dask.threaded.get",
             "params": {"n": cap("dask", "raw-graph-threads", sp["n"], quick), "api": "raw-graph"}},
        ]
    if name == "cluster-noop":
        if peer == "ray":
            if not sp.get("processes", True):
                return [{"variant": "-", "na": "Ray has no thread workers (see processes=true)"}]
            return [{"variant": "ray.init(num_cpus=2): f.remote(i) + ray.get",
                     "params": {"n": cap("ray", "tasks", sp["n"], quick), "num_cpus": 2}}]
        processes = sp.get("processes", True)
        key = "localcluster-processes" if processes else "localcluster-threads"
        return [{"variant": f"LocalCluster(n_workers=2, threads_per_worker=1, processes={processes}): map + gather",
                 "params": {"n": cap("dask", key, sp["n"], quick), "workers": sp["workers"],
                            "threads": sp["threads"], "processes": processes}}]
    if name == "cluster-chain":
        if peer == "ray":
            n = cap("ray", "chain", sp["n"], quick)
            return [
                {"variant": "tasks inc.remote(prev) (Ray picks the process)", "params": {"n": n, "how": "tasks"},
                 "note": "Ray cannot pin a task to one of two worker processes on one node"},
                {"variant": "2 actors, alternating", "params": {"n": n, "how": "actors"}},
            ]
        return [{"variant": "LocalCluster 2x1, submit(inc, prev, workers=[other])",
                 "params": {"n": cap("dask", "chain", sp["n"], quick), "workers": sp["workers"]}}]
    if name == "net-rtt":
        n = cap(peer, "rtt", sp["round_trips"], quick)
        if peer == "ray":
            return [{"variant": "ray.get(f.remote(x)) in a loop", "params": {"round_trips": n}}]
        return [{"variant": "LocalCluster 2x1, client.submit(f, x).result() in a loop", "params": {"round_trips": n}}]
    if name == "cluster-transfer":
        mb = sp["mb"]
        if peer == "ray":
            return [
                {"variant": "object store: a task returns a uint8 array, another task takes it",
                 "params": {"mb": mb, "as": "array"},
                 "note": "Ray places both tasks; the consumer maps the shared-memory object: no copy, no transfer"},
                {"variant": "object store: a task returns bytes, another task takes them",
                 "params": {"mb": mb, "as": "bytes"},
                 "note": "Ray places both tasks; the consumer copies the bytes out of shared memory once"},
            ]
        return [{"variant": "LocalCluster 2x1, workers= restrictions (TCP between the worker processes)",
                 "params": {"mb": mb, "workers": 2}}]
    if name == "cluster-startup":
        if peer == "ray":
            return [{"variant": "ray.init(num_cpus=2) + one task + ray.shutdown()", "params": {"num_cpus": 2}}]
        return [{"variant": "LocalCluster(2 processes x 1 thread) + Client + one task + close", "params": {"workers": 2}}]
    if name == "actor-roundtrip":
        n = cap(peer, "actor-roundtrip", sp["n"], quick)
        if peer == "ray":
            return [{"variant": "@ray.remote class Counter, ray.get(c.increment.remote()) in a loop",
                     "params": {"n": n, "num_cpus": 2}}]
        return [{"variant": "LocalCluster 2x1, submit(Counter, actor=True), counter.increment().result() in a loop",
                 "params": {"n": n, "workers": 2, "threads": 1}}]
    if name == "actor-throughput":
        n = cap(peer, "actor-throughput", sp["n"], quick)
        actors = sp["actors"]
        if peer == "ray":
            return [{"variant": f"{actors} Ray actor{'s' if actors != 1 else ''}: every c.increment.remote(), then one ray.get(list)",
                     "params": {"n": n, "actors": actors, "num_cpus": 2}}]
        return [{"variant": f"LocalCluster 2x1, {actors} actor{'s' if actors != 1 else ''}: every counter.increment() (ActorFuture), then .result() each",
                 "params": {"n": n, "actors": actors, "workers": 2, "threads": 1}}]
    if name == "ray-tasks":
        if peer == "ray":
            return [{"variant": "ray.init(num_cpus=2): increment.remote(x) + ray.get",
                     "params": {"n": cap("ray", "tasks", sp["n"], quick), "num_cpus": 2}}]
        return [{"variant": "LocalCluster(n_workers=2, threads_per_worker=1): client.map(increment, range(n)) + gather",
                 "params": {"n": cap("dask", "localcluster-processes", sp["n"], quick), "workers": 2, "threads": 1},
                 "note": "Dask has no .remote spelling: its map is the equivalent"}]
    if name == "bag-foldby":
        if peer == "ray":
            return [{"variant": "-", "na": RAY_NO_BAGS}]
        return [{"variant": "LocalCluster 2x1: db.range(n, 20).map(double).filter(div3).foldby(mod100, add)",
                 "params": dict(sp)}]
    if name == "bag-wordcount":
        if peer == "ray":
            return [{"variant": "-", "na": RAY_NO_BAGS}]
        if sp["via"] == "rust":
            return [{"variant": "-", "na": "the single-threaded Rust reference is shoal's own line"}]
        if sp["via"] == "bag-flat_map":
            return [{"variant": "-", "na": "shoal with flat_map of a #[shoal::remote] fn; Dask's line is beside via=bag"}]
        files = cap("dask", "bag-wordcount", sp["files"], quick)
        return [{"variant": f"LocalCluster 2x1: read_text(gz).str.split().flatten().frequencies(), {files} of the {sp['files']} files",
                 "params": dict(sp, use_files=files)}]
    if name == "bag-groupby":
        if peer == "ray":
            return [{"variant": "-", "na": RAY_NO_BAGS}]
        return [{"variant": "LocalCluster 2x1: db.range(n, 20).map(pair).groupby(first, shuffle='disk').map(len)",
                 "params": dict(sp, n=cap("dask", "bag-groupby", sp["n"], quick))}]
    raise SystemExit(f"peers.py: no peer version of benchmark {name!r}")


UNITS = {
    "array-seed": "elements/s",
    "array-chunks": "elements/s",
    "threads-noop": "tasks/s",
    "cluster-noop": "tasks/s",
    "cluster-chain": "tasks/s",
    "net-rtt": "round trips/s",
    "cluster-transfer": "bytes/s",
    "cluster-startup": "clusters/s",
    "actor-roundtrip": "calls/s",
    "actor-throughput": "calls/s",
    "ray-tasks": "tasks/s",
    "bag-foldby": "elements/s",
    "bag-wordcount": "bytes/s",
    "bag-groupby": "pairs/s",
}

# --------------------------------------------------------------------------
# Task functions (module level, so Dask's workers can import them by name).


def noop(x):
    return x


def inc(x):
    return x + 1


def make_bytes(n):
    import numpy as np

    # i % 251 for i in 0..n, as shoal's cluster_make_bytes (not all alike).
    return np.resize(np.arange(251, dtype=np.uint8), n)


def make_raw_bytes(n):
    return make_bytes(n).tobytes()


def take_bytes(a):
    import numpy as np

    if isinstance(a, (bytes, bytearray, memoryview)):
        return (len(a), sum(a[::4096]))
    return (len(a), int(a[::4096].sum(dtype=np.uint64)))


def expected_sample(n):
    return sum(i % 251 for i in range(0, n, 4096))


def ready():
    return 1


def double(x):
    return 2 * x


def div3(x):
    return x % 3 == 0


def mod100(x):
    return x % 100


def add(a, b):
    return a + b


def pair(x):
    return ((x * 2_654_435_761) % 100_000, x)


def first(p):
    return p[0]


def group_len(g):
    return len(g[1])


def corpus_dir(mb, files):
    """The corpus shoal-bench bag-wordcount made (run shoal's line first)."""
    import tempfile

    d = os.path.join(tempfile.gettempdir(), f"shoal-bench-corpus-{mb}mb-{files}files")
    if not os.path.exists(os.path.join(d, "done")):
        raise RuntimeError(f"no corpus at {d}: run `shoal bench bag-wordcount` first, which makes it")
    return d


class Counter:
    """The tutorial's counter (shoal's Counter in crates/shoal-bench/src/actors.rs)."""

    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n


# --------------------------------------------------------------------------
# Helpers for the peers.


def quiet_dask():
    import logging

    import dask

    dask.config.set({"distributed.logging.distributed": "error", "distributed.admin.tick.limit": "1h"})
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.ERROR)


def dask_cluster(workers, threads, processes):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=processes,
        dashboard_address=None,
        silence_logs=50,
    )
    client = Client(cluster)
    return cluster, client


def ray_init(num_cpus=2):
    import logging

    import ray

    ray.init(
        num_cpus=num_cpus,
        object_store_memory=10**9,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    return ray


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


# --------------------------------------------------------------------------
# One measurement per benchmark and peer. Each returns
# (seconds, items or None, extra dict).


def dask_array_seed(p):
    import dask
    import dask.array as da

    n = p["n"]
    chunks = tuple(p["chunks"]) if isinstance(p["chunks"], list) else p["chunks"]
    cluster = client = None
    extra = {}
    try:
        if p["scheduler"] == "cluster":
            cluster, client = dask_cluster(2, 1, True)
            ctx = dask.config.set(scheduler=client)
        else:
            ctx = dask.config.set(scheduler="threads")
        with ctx:

            extra["chunksize"] = list(da.random.random((n, 10_000, 10), chunks=chunks).chunksize)

            def work():
                x = da.random.random((n, 10_000, 10), chunks=chunks)
                y = da.random.random((n, 10_000, 10), chunks=chunks)
                return (da.arcsin(x) + da.arccos(y)).sum(axis=(1, 2)).compute()

            seconds, z = timed(work)
    finally:
        if client is not None:
            client.close()
            cluster.close()
    mean = float(z.mean()) / 100_000.0
    if abs(mean - 1.5707963) > 1e-3:
        raise RuntimeError(f"z.mean() / 100000 = {mean}, not near pi/2")
    extra["mean_over_1e5"] = mean
    return seconds, 2.0 * n * 100_000, extra


def dask_array_chunks(p):
    N = 10_000_000
    if p["chunk"] == "plain":
        import numpy as np

        seconds, total = timed(lambda: float(np.random.random(N).sum()))
    else:
        import dask
        import dask.array as da

        with dask.config.set(scheduler="threads"):
            seconds, total = timed(lambda: float(da.random.random(N, chunks=(p["chunk"],)).sum().compute()))
    if abs(total / N - 0.5) > 1e-3:
        raise RuntimeError(f"the mean of uniform numbers came out as {total / N}")
    return seconds, N, {}


def dask_threads_noop(p):
    n = p["n"]
    if p["api"] == "delayed":
        import dask
        from dask import delayed

        def work():
            tasks = [delayed(noop)(i) for i in range(n)]
            return sum(dask.compute(*tasks, scheduler="threads"))

        seconds, total = timed(work)
        extra = {}
    elif p["api"] == "raw-graph":
        import dask.threaded

        def work():
            dsk = {("noop", i): (noop, i) for i in range(n)}
            return sum(dask.threaded.get(dsk, list(dsk)))

        seconds, total = timed(work)
        extra = {}
    else:
        from distributed import Client

        client = Client(processes=False, dashboard_address=None, silence_logs=50)
        try:
            client.gather(client.map(noop, range(2), key="warmup"))
            phases = {}

            def work():
                t = time.perf_counter()
                futures = client.map(noop, range(n))
                phases["submit_s"] = time.perf_counter() - t
                t = time.perf_counter()
                values = client.gather(futures)
                phases["gather_s"] = time.perf_counter() - t
                return sum(values)

            seconds, total = timed(work)
            extra = dict(phases, threads=sum(w["nthreads"] for w in client.scheduler_info()["workers"].values()))
        finally:
            client.close()
    if total != n * (n - 1) // 2:
        raise RuntimeError("wrong sum of no-op results")
    return seconds, n, extra


def dask_cluster_noop(p):
    n = p["n"]
    cluster, client = dask_cluster(p["workers"], p["threads"], p["processes"])
    try:
        client.gather(client.map(noop, range(2), key="warmup"))
        seconds, total = timed(lambda: sum(client.gather(client.map(noop, range(n)))))
    finally:
        client.close()
        cluster.close()
    if total != n * (n - 1) // 2:
        raise RuntimeError("wrong results")
    return seconds, n, {}


def dask_cluster_chain(p):
    n = p["n"]
    cluster, client = dask_cluster(p["workers"], 1, True)
    try:
        addrs = sorted(client.scheduler_info()["workers"])
        client.gather(client.map(noop, range(2), key="warmup"))

        def work():
            f = client.submit(inc, 0, workers=[addrs[0]], pure=False)
            for i in range(1, n):
                f = client.submit(inc, f, workers=[addrs[i % len(addrs)]], pure=False)
            return f.result()

        seconds, last = timed(work)
    finally:
        client.close()
        cluster.close()
    if last != n:
        raise RuntimeError("wrong chain result")
    return seconds, n, {"us_per_link": round(seconds / n * 1e7) / 10.0}


def rtt_extra(each, seconds, trips):
    each.sort()
    return {
        "median_rtt_us": round(each[len(each) // 2] * 1e7) / 10.0,
        "mean_rtt_us": round(seconds / trips * 1e7) / 10.0,
    }


def dask_net_rtt(p):
    trips = p["round_trips"]
    cluster, client = dask_cluster(2, 1, True)
    try:
        for i in range(20):
            client.submit(inc, -i - 1, pure=False).result()
        each = []
        start = time.perf_counter()
        for i in range(trips):
            t = time.perf_counter()
            if client.submit(inc, i, pure=False).result() != i + 1:
                raise RuntimeError("wrong result")
            each.append(time.perf_counter() - t)
        seconds = time.perf_counter() - start
    finally:
        client.close()
        cluster.close()
    return seconds, trips, rtt_extra(each, seconds, trips)


def dask_cluster_transfer(p):
    n = p["mb"] * 1_000_000
    expected = (n, expected_sample(n))
    from distributed import wait

    cluster, client = dask_cluster(p["workers"], 1, True)
    try:
        a, b = sorted(client.scheduler_info()["workers"])[:2]

        def move_once():
            made = client.submit(make_bytes, n, workers=[a], pure=False)
            wait(made)
            if made.status != "finished":
                raise RuntimeError(f"the bulk result was not made: {made.status}")
            seconds, got = timed(lambda: client.submit(take_bytes, made, workers=[b], pure=False).result())
            if tuple(got) != expected:
                raise RuntimeError("the bytes arrived changed")
            del made
            return seconds

        first = move_once()
        seconds = move_once()
    finally:
        client.close()
        cluster.close()
    gbps = lambda s: round(n / s / 1e7) / 100.0
    return seconds, n, {"gb_per_s": gbps(seconds), "first_gb_per_s": gbps(first)}


def dask_cluster_startup(p):
    import distributed  # noqa: F401  (the import is not timed)

    def work():
        cluster, client = dask_cluster(p["workers"], 1, True)
        try:
            if len(client.scheduler_info()["workers"]) != p["workers"]:
                raise RuntimeError("not every worker joined")
            if client.submit(ready, pure=False).result() != 1:
                raise RuntimeError("wrong result")
        finally:
            client.close()
            cluster.close()

    seconds, _ = timed(work)
    return seconds, 1, {}


def ray_cluster_noop(p):
    n = p["n"]
    ray = ray_init(p["num_cpus"])
    try:
        f = ray.remote(noop)
        ray.get([f.remote(i) for i in range(2)])
        seconds, total = timed(lambda: sum(ray.get([f.remote(i) for i in range(n)])))
    finally:
        ray.shutdown()
    if total != n * (n - 1) // 2:
        raise RuntimeError("wrong results")
    return seconds, n, {}


def ray_cluster_chain(p):
    n = p["n"]
    ray = ray_init(2)
    try:
        if p["how"] == "actors":

            class Inc:
                def inc(self, x):
                    return x + 1

                def pid(self):
                    return os.getpid()

            Actor = ray.remote(num_cpus=1)(Inc)
            actors = [Actor.remote(), Actor.remote()]
            pids = ray.get([a.pid.remote() for a in actors])
            if pids[0] == pids[1]:
                raise RuntimeError("the two actors share a process")

            def work():
                r = actors[0].inc.remote(0)
                for i in range(1, n):
                    r = actors[i % 2].inc.remote(r)
                return ray.get(r)

        else:
            f = ray.remote(inc)
            ray.get([f.remote(i) for i in range(2)])

            def work():
                r = f.remote(0)
                for _ in range(1, n):
                    r = f.remote(r)
                return ray.get(r)

        seconds, last = timed(work)
    finally:
        ray.shutdown()
    if last != n:
        raise RuntimeError("wrong chain result")
    return seconds, n, {"us_per_link": round(seconds / n * 1e7) / 10.0}


def ray_net_rtt(p):
    trips = p["round_trips"]
    ray = ray_init(2)
    try:
        f = ray.remote(inc)
        for i in range(20):
            ray.get(f.remote(-i - 1))
        each = []
        start = time.perf_counter()
        for i in range(trips):
            t = time.perf_counter()
            if ray.get(f.remote(i)) != i + 1:
                raise RuntimeError("wrong result")
            each.append(time.perf_counter() - t)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    return seconds, trips, rtt_extra(each, seconds, trips)


def ray_cluster_transfer(p):
    n = p["mb"] * 1_000_000
    expected = (n, expected_sample(n))
    ray = ray_init(2)
    try:
        make = ray.remote(make_raw_bytes if p.get("as") == "bytes" else make_bytes)
        take = ray.remote(take_bytes)
        ray.get([take.remote(make.remote(4096)) for _ in range(2)])

        def move_once():
            made = make.remote(n)
            ray.wait([made], fetch_local=False)
            seconds, got = timed(lambda: ray.get(take.remote(made)))
            if tuple(got) != expected:
                raise RuntimeError("the bytes arrived changed")
            return seconds

        first = move_once()
        seconds = move_once()
    finally:
        ray.shutdown()
    gbps = lambda s: round(n / s / 1e7) / 100.0
    return seconds, n, {"gb_per_s": gbps(seconds), "first_gb_per_s": gbps(first)}


def ray_cluster_startup(p):
    import ray  # noqa: F401  (the import is not timed)

    def work():
        r = ray_init(p["num_cpus"])
        try:
            if r.get(r.remote(ready).remote()) != 1:
                raise RuntimeError("wrong result")
        finally:
            r.shutdown()

    seconds, _ = timed(work)
    return seconds, 1, {}


def dask_actor_roundtrip(p):
    n = p["n"]
    cluster, client = dask_cluster(p["workers"], p["threads"], True)
    try:
        counter = client.submit(Counter, actor=True, pure=False).result()
        # Made and reached before the clock starts (as shoal's).
        counter.increment().result()

        def work():
            last = 0
            for _ in range(n):
                last = counter.increment().result()
            return last

        seconds, last = timed(work)
    finally:
        client.close()
        cluster.close()
    if last != n + 1:
        raise RuntimeError("wrong count")
    return seconds, n, {"us_per_call": round(seconds / n * 1e7) / 10.0}


def dask_actor_throughput(p):
    n, actors = p["n"], max(1, p["actors"])
    cluster, client = dask_cluster(p["workers"], p["threads"], True)
    try:
        counters = [client.submit(Counter, actor=True, pure=False) for _ in range(actors)]
        counters = [c.result() for c in counters]
        for f in [c.increment() for c in counters]:
            f.result()
        where = sorted({c._address for c in counters})

        def work():
            calls = [counters[i % actors].increment() for i in range(n)]
            return len([f.result() for f in calls])

        seconds, done = timed(work)
    finally:
        client.close()
        cluster.close()
    if done != n:
        raise RuntimeError("calls lost")
    return seconds, n, {"actor_workers": len(where)}


def dask_ray_tasks(p):
    n = p["n"]
    cluster, client = dask_cluster(p["workers"], p["threads"], True)
    try:
        client.gather(client.map(inc, range(2), key="warmup"))
        seconds, total = timed(lambda: sum(client.gather(client.map(inc, range(n)))))
    finally:
        client.close()
        cluster.close()
    if total != n * (n + 1) // 2:
        raise RuntimeError("wrong sum")
    return seconds, n, {}


def ray_actor_roundtrip(p):
    n = p["n"]
    ray = ray_init(p["num_cpus"])
    try:
        c = ray.remote(Counter).remote()
        # Made and reached before the clock starts (as shoal's).
        ray.get(c.increment.remote())

        def work():
            last = 0
            for _ in range(n):
                last = ray.get(c.increment.remote())
            return last

        seconds, last = timed(work)
    finally:
        ray.shutdown()
    if last != n + 1:
        raise RuntimeError("wrong count")
    return seconds, n, {"us_per_call": round(seconds / n * 1e7) / 10.0}


def ray_actor_throughput(p):
    n, actors = p["n"], max(1, p["actors"])
    ray = ray_init(p["num_cpus"])
    try:
        Actor = ray.remote(Counter)
        counters = [Actor.remote() for _ in range(actors)]
        ray.get([c.increment.remote() for c in counters])

        def work():
            refs = [counters[i % actors].increment.remote() for i in range(n)]
            return len(ray.get(refs))

        seconds, done = timed(work)
    finally:
        ray.shutdown()
    if done != n:
        raise RuntimeError("calls lost")
    return seconds, n, {}


def ray_ray_tasks(p):
    n = p["n"]
    ray = ray_init(p["num_cpus"])
    try:
        increment = ray.remote(inc)
        ray.get([increment.remote(i) for i in range(2)])
        seconds, total = timed(lambda: sum(ray.get([increment.remote(x) for x in range(n)])))
    finally:
        ray.shutdown()
    if total != n * (n + 1) // 2:
        raise RuntimeError("wrong sum")
    return seconds, n, {}


def dask_bag_foldby(p):
    import dask.bag as db

    n = p["n"]
    cluster, client = dask_cluster(2, 1, True)
    try:
        db.range(10, npartitions=2).map(double).compute()

        def work():
            b = db.range(n, npartitions=p["npartitions"])
            return dict(b.map(double).filter(div3).foldby(mod100, add).compute())

        seconds, sums = timed(work)
    finally:
        client.close()
        cluster.close()
    expected = {}
    for x in range(0, 2 * n, 2):
        if x % 3 == 0:
            expected[x % 100] = expected.get(x % 100, 0) + x
    if sums != expected:
        raise RuntimeError("wrong foldby result")
    return seconds, n, {}


def dask_bag_wordcount(p):
    import dask.bag as db

    d = corpus_dir(p["mb"], p["files"])
    total_bytes = int(open(os.path.join(d, "done")).read().strip())
    paths = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".gz"))[: p["use_files"]]
    used_bytes = total_bytes * len(paths) / p["files"]
    cluster, client = dask_cluster(2, 1, True)
    try:
        seconds, counts = timed(lambda: db.read_text(paths).str.split().flatten().frequencies().compute())
    finally:
        client.close()
        cluster.close()
    if len(counts) < 1000:
        raise RuntimeError("implausible word counts")
    return seconds, used_bytes, {"files": len(paths), "distinct_words": len(counts),
                                 "mb_per_s": used_bytes / seconds / 1e6}


def dask_bag_groupby(p):
    import dask.bag as db

    n = p["n"]
    cluster, client = dask_cluster(2, 1, True)
    try:
        def work():
            b = db.range(n, npartitions=p["npartitions"]).map(pair)
            return b.groupby(first, shuffle="disk").map(group_len).compute()

        seconds, sizes = timed(work)
    finally:
        client.close()
        cluster.close()
    if sum(sizes) != n:
        raise RuntimeError("pairs lost in the shuffle")
    return seconds, n, {"groups": len(sizes)}


RUNNERS = {
    ("dask", "array-seed"): dask_array_seed,
    ("dask", "array-chunks"): dask_array_chunks,
    ("dask", "threads-noop"): dask_threads_noop,
    ("dask", "cluster-noop"): dask_cluster_noop,
    ("dask", "cluster-chain"): dask_cluster_chain,
    ("dask", "net-rtt"): dask_net_rtt,
    ("dask", "cluster-transfer"): dask_cluster_transfer,
    ("dask", "cluster-startup"): dask_cluster_startup,
    ("ray", "cluster-noop"): ray_cluster_noop,
    ("ray", "cluster-chain"): ray_cluster_chain,
    ("ray", "net-rtt"): ray_net_rtt,
    ("ray", "cluster-transfer"): ray_cluster_transfer,
    ("ray", "cluster-startup"): ray_cluster_startup,
    ("dask", "actor-roundtrip"): dask_actor_roundtrip,
    ("dask", "actor-throughput"): dask_actor_throughput,
    ("dask", "ray-tasks"): dask_ray_tasks,
    ("ray", "actor-roundtrip"): ray_actor_roundtrip,
    ("ray", "actor-throughput"): ray_actor_throughput,
    ("ray", "ray-tasks"): ray_ray_tasks,
    ("dask", "bag-foldby"): dask_bag_foldby,
    ("dask", "bag-wordcount"): dask_bag_wordcount,
    ("dask", "bag-groupby"): dask_bag_groupby,
}


def child(peer, name, params):
    if peer == "dask":
        quiet_dask()
    t = time.perf_counter()
    if peer == "dask":
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
    else:
        import ray  # noqa: F401
    import_s = time.perf_counter() - t
    seconds, items, extra = RUNNERS[(peer, name)](params)
    extra["import_s"] = round(import_s, 3)
    out = {
        "seconds": seconds,
        "items": items,
        "extra": extra,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "children_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 or None,
    }
    sys.stdout.flush()
    print("\n" + json.dumps(out))


# --------------------------------------------------------------------------
# The parent: fresh process per run, median, one JSON line.


def versions(peer):
    from importlib.metadata import version

    names = ["dask", "distributed", "numpy"] if peer == "dask" else ["ray", "numpy"]
    return {n: version(n) for n in names}


def run_once(peer, name, params):
    """One measurement in a fresh process (its own session, so that nothing it
    starts outlives it: the whole process group is killed afterwards)."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "child", peer, name, json.dumps(params)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.wait()
        raise RuntimeError(f"timed out after {CHILD_TIMEOUT_S} s")
    finally:
        kill_group(proc.pid)
        if peer == "ray" and proc.returncode != 0:
            ray_stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the benchmark process ended with exit status {proc.returncode}")
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError("the benchmark process printed no JSON")
    return json.loads(lines[-1])


def ray_stop():
    """After a failed Ray measurement: stop what it may have left running."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    if os.path.exists(ray):
        subprocess.run([ray, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def measure(peer, name, entry, shoal_ps, runs):
    params = entry["params"]
    samples = []
    for _ in range(runs):
        samples.append(run_once(peer, name, params))
    samples.sort(key=lambda s: s["seconds"])
    med = samples[len(samples) // 2]
    line = {
        "name": name,
        "peer": peer,
        "variant": entry["variant"],
        "params": params,
        "shoal_params": shoal_ps,
        "median_s": med["seconds"],
        "runs_s": [s["seconds"] for s in samples],
    }
    if med.get("items") is not None:
        line["throughput"] = round(med["items"] / med["seconds"] * 10) / 10
        line["unit"] = UNITS[name]
    line.update(med.get("extra") or {})
    line["peak_rss_bytes"] = max(s["peak_rss_bytes"] for s in samples)
    kids = [s["children_peak_rss_bytes"] for s in samples if s.get("children_peak_rss_bytes")]
    line["children_peak_rss_bytes"] = max(kids) if kids else None
    if entry.get("note"):
        line["note"] = entry["note"]
    line["versions"] = versions(peer)
    return line


def bench(args):
    import argparse

    ap = argparse.ArgumentParser(prog="peers.py bench")
    ap.add_argument("name")
    ap.add_argument("--peer", required=True, choices=["dask", "ray"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shoal-lines", help="shoal's JSON lines of this run (their params are used)")
    a = ap.parse_args(args)
    sps = None
    if a.shoal_lines and os.path.exists(a.shoal_lines):
        sps = []
        for line in open(a.shoal_lines):
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if j.get("name") == a.name and "peer" not in j and j.get("params") not in sps:
                sps.append(j["params"])
        if not sps:
            sps = None
    if sps is None:
        sps = shoal_params(a.name, a.quick)
    # One measurement per distinct peer parameter set (two shoal rows whose
    # capped n is the same share it).
    entries = []
    for sp in sps:
        for e in plan(a.name, a.peer, sp, a.quick):
            for seen in entries:
                if seen["variant"] == e["variant"] and seen.get("params") == e.get("params") and seen.get("na") == e.get("na"):
                    seen["shoal_params"].append(sp)
                    break
            else:
                entries.append(dict(e, shoal_params=[sp]))
    failed = 0
    for e in entries:
        if "na" in e:
            print(json.dumps({"name": a.name, "peer": a.peer, "variant": e["variant"], "shoal_params": e["shoal_params"], "na": e["na"]}), flush=True)
            continue
        print(f"peers: {a.peer} {a.name} {e['variant']} {json.dumps(e['params'])} x{a.runs}", file=sys.stderr, flush=True)
        try:
            line = measure(a.peer, a.name, e, e["shoal_params"], max(1, a.runs))
        except Exception as err:  # report and go on with the next one
            failed += 1
            print(f"peers: {a.peer} {a.name} {e['params']} failed: {err}", file=sys.stderr, flush=True)
            line = {"name": a.name, "peer": a.peer, "variant": e["variant"], "params": e["params"],
                    "shoal_params": e["shoal_params"], "failed": str(err)}
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


# --------------------------------------------------------------------------
# The table.

# What each benchmark shows: (key of the figure, how to format it, whether
# larger is better).


def fmt_num(x, digits=3):
    if x is None:
        return "?"
    if x == 0:
        return "0"
    from math import floor, log10

    mag = floor(log10(abs(x)))
    dec = max(0, digits - 1 - mag)
    s = f"{x:,.{dec}f}".replace(",", " ")
    return s


def fmt_seconds(s):
    if s >= 1:
        return f"{fmt_num(s)} s"
    if s >= 1e-3:
        return f"{fmt_num(s * 1e3)} ms"
    return f"{fmt_num(s * 1e6)} µs"


def figure(name, line):
    """(text, value, larger_is_better) of one line's headline figure."""
    if name in ("array-seed", "array-chunks", "cluster-startup"):
        return fmt_seconds(line["median_s"]), line["median_s"], False
    if name in ("threads-noop", "cluster-noop", "ray-tasks"):
        return f"{fmt_num(line['throughput'])} tasks/s", line["throughput"], True
    if name == "actor-roundtrip":
        return f"{fmt_seconds(line['us_per_call'] * 1e-6)}/call", line["us_per_call"], False
    if name == "actor-throughput":
        return f"{fmt_num(line['throughput'])} calls/s", line["throughput"], True
    if name == "cluster-chain":
        return f"{fmt_seconds(line['us_per_link'] * 1e-6)}/link", line["us_per_link"], False
    if name == "net-rtt":
        return f"{fmt_seconds(line['median_rtt_us'] * 1e-6)}/round trip", line["median_rtt_us"], False
    if name == "cluster-transfer":
        return f"{fmt_num(line['gb_per_s'])} GB/s", line["gb_per_s"], True
    if name == "bag-wordcount":
        return f"{fmt_num(line['throughput'] / 1e6)} MB/s", line["throughput"], True
    if name in ("bag-foldby", "bag-groupby"):
        unit = "elements/s" if name == "bag-foldby" else "pairs/s"
        return f"{fmt_num(line['throughput'])} {unit} ({fmt_seconds(line['median_s'])})", line["throughput"], True
    return fmt_seconds(line["median_s"]), line["median_s"], False


RSS_SHOWN = ("threads-noop", "cluster-noop", "array-seed", "array-chunks", "cluster-transfer",
             "actor-throughput", "ray-tasks", "bag-wordcount", "bag-groupby")


def rss(line):
    r = line.get("peak_rss_bytes")
    return f"{r / 1e6:.0f} MB" if r else "?"


def ratio(shoal_val, peer_val, larger_better):
    if shoal_val is None or peer_val is None or shoal_val == 0 or peer_val == 0:
        return "—"
    r = shoal_val / peer_val if larger_better else peer_val / shoal_val
    return f"{r:.3g}×" if r < 10 else f"{r:,.0f}×".replace(",", " ")


def peer_cell(name, line, ran=True):
    if line is None:
        return ("—" if ran else "not run"), None
    if "na" in line:
        return f"n/a: {line['na']}", None
    if "failed" in line:
        return f"failed: {line['failed']}", None
    text, val, _ = figure(name, line)
    bits = [line["variant"]]
    n_keys = ("n", "round_trips")
    for k in n_keys:
        if k in line.get("params", {}):
            sp = line["shoal_params"][0] if line.get("shoal_params") else {}
            if sp.get(k) != line["params"][k]:
                bits.append(f"{k}={line['params'][k]}")
    if name == "cluster-transfer" and line.get("first_gb_per_s") is not None:
        bits.append(f"first {fmt_num(line['first_gb_per_s'])} GB/s")
    if name == "actor-roundtrip":
        bits.append(f"{fmt_num(line['throughput'])} calls/s")
    if name == "actor-throughput" and line.get("actor_workers") and line["params"].get("actors", 1) > 1:
        bits.append(f"the actors on {line['actor_workers']} worker{'s' if line['actor_workers'] != 1 else ''}")
    if name in RSS_SHOWN:
        bits.append(f"RSS {rss(line)}")
    if line.get("note"):
        bits.append(line["note"])
    runs = len(line.get("runs_s", []))
    bits.append(f"{runs} run{'s' if runs != 1 else ''}")
    return f"**{text}** ({'; '.join(bits)})", val


def shoal_cell(name, line, chain_line):
    text, val, larger = figure(name, line)
    bits = []
    if name == "net-rtt":
        # The peers' figure is a task's round trip: it stands beside shoal's
        # cluster-chain per link; the raw TCP round trip is the floor.
        raw = f"raw 64-byte TCP round trip {fmt_seconds(line['median_rtt_us'] * 1e-6)}"
        if chain_line is None:
            return f"{raw} (cluster-chain not run)", None, False
        ctext, cval, clarger = figure("cluster-chain", chain_line)
        return f"**{ctext}** (cluster-chain n={chain_line['params']['n']}; {raw})", cval, clarger
    if name == "cluster-transfer":
        bits.append(f"first {fmt_num(line.get('first_gb_per_s'))} GB/s; raw TCP {fmt_num(line.get('tcp_gb_per_s'))} GB/s")
    if name == "actor-roundtrip":
        bits.append(f"{fmt_num(line['throughput'])} calls/s")
    if name in RSS_SHOWN:
        bits.append(f"RSS {rss(line)}")
    runs = len(line.get("runs_s", []))
    bits.append(f"{runs} run{'s' if runs != 1 else ''}")
    return f"**{text}** ({'; '.join(bits)})", val, larger


def table(args):
    import argparse

    ap = argparse.ArgumentParser(prog="peers.py table")
    ap.add_argument("file")
    a = ap.parse_args(args)
    lines = []
    meta = {}
    for raw in open(a.file):
        raw = raw.strip()
        if not raw.startswith("{"):
            continue
        j = json.loads(raw)
        if "meta" in j:
            meta = j["meta"]
            continue
        lines.append(j)
    shoal = [l for l in lines if "peer" not in l]
    chain = next((l for l in shoal if l["name"] == "cluster-chain"), None)
    out = []
    if meta:
        out.append(f"Run of {meta.get('date', '?')} on {meta.get('host', '?')} ({meta.get('cpus', '?')} cores); "
                   f"shoal: `{meta.get('shoal', '?')}`; {meta.get('versions', '')}; "
                   f"runs per figure: shoal {meta.get('runs', '?')}, peers {meta.get('peer_runs', '?')}"
                   f"{' (--quick)' if meta.get('quick') else ''}; "
                   f"load average at the start {float(meta.get('loadavg_1m_at_start', 'nan')):.1f} (other work on the host skews figures).")
        out.append("")
    out.append("| benchmark | params | shoal | Dask | Ray | Dask/shoal | Ray/shoal |")
    out.append("|---|---|---|---|---|---|---|")
    order = [n for n in BENCHMARKS if any(l["name"] == n for l in lines)]
    for name in order:
        for sl in [l for l in shoal if l["name"] == name]:
            sp = sl["params"]
            stext, sval, larger = shoal_cell(name, sl, chain)
            def matching(peer):
                return [l for l in lines if l.get("peer") == peer and l["name"] == name and sp in l.get("shoal_params", [])]
            dl, rl = matching("dask"), matching("ray")
            ran = {p: any(l.get("peer") == p and l["name"] == name for l in lines) for p in ("dask", "ray")}
            for k in range(max(1, len(dl), len(rl))):
                d = dl[k] if k < len(dl) else None
                r = rl[k] if k < len(rl) else None
                dtext, dval = peer_cell(name, d, ran["dask"])
                rtext, rval = peer_cell(name, r, ran["ray"])
                if k > 0 and r is None and rl:
                    rtext = "〃"
                if k > 0 and d is None and dl:
                    dtext = "〃"
                out.append("| " + " | ".join([
                    f"`{name}`",
                    "`" + json.dumps(sp, separators=(",", ":")) + "`",
                    stext if k == 0 else "〃 " + stext.split(" (")[0],
                    dtext,
                    rtext,
                    ratio(sval, dval, larger) if dval is not None else ("〃" if dtext == "〃" else "—"),
                    ratio(sval, rval, larger) if rval is not None else ("〃" if rtext == "〃" else "—"),
                ]).replace("\n", " ") + " |")
    # Peer lines whose shoal line is missing (shoal failed or was not run).
    orphan = [l for l in lines if "peer" in l and not any(l["name"] == s["name"] and s["params"] in l.get("shoal_params", []) for s in shoal)]
    for l in orphan:
        text, _ = peer_cell(l["name"], l)
        col = [text, "—"] if l["peer"] == "dask" else ["—", text]
        out.append(f"| `{l['name']}` | `{json.dumps(l.get('shoal_params'), separators=(',', ':'))}` | (no shoal figure) | {col[0]} | {col[1]} | — | — |")
    out.append("")
    out.append("Ratios are peer/shoal in time (shoal/peer in rate): above 1 means shoal is faster. "
               "Where the peer ran a smaller n than shoal (stated in its cell), rates are compared. "
               "`net-rtt`: the peers' figure is one tiny task submitted and awaited, beside shoal's `cluster-chain` per link "
               "(shoal's raw TCP round trip is the floor, not a framework figure). "
               "`actor-roundtrip`: time per awaited call, peer/shoal. "
               "`ray-tasks`: Dask has no `.remote` spelling; its row is `client.map` on the same LocalCluster 2x1. RSS: the peak of the measuring process "
               "(the client/driver; workers are other processes).")
    print("\n".join(out))
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "child":
        peer, name, params = argv[2], argv[3], json.loads(argv[4])
        child(peer, name, params)
        return 0
    if len(argv) >= 2 and argv[1] == "bench":
        return bench(argv[2:])
    if len(argv) >= 2 and argv[1] == "table":
        return table(argv[2:])
    if len(argv) >= 2 and argv[1] == "list":
        print("\n".join(BENCHMARKS))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        sys.exit(130)
