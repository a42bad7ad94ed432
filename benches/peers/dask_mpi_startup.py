"""dask-mpi beside `shoal bench mpi-startup`: time from mpirun's start to the
first task's result with N ranks (rank 0 scheduler, rank 1 client, the rest
workers), and to every rank's exit.

    target/peers-venv/bin/pip install dask-mpi==2026.3.0 mpi4py==4.1.2   # needs mpicc
    target/peers-venv/bin/python benches/peers/dask_mpi_startup.py [RANKS] [RUNS]

Prints one JSON line like shoal bench's (median of RUNS).
"""
import json
import os
import statistics
import subprocess
import sys
import time

RANK = r"""
from dask_mpi import initialize
initialize(dashboard=False, nthreads=1)
from distributed import Client
client = Client()
print("first result", client.submit(lambda x: x + 1, 41).result(), flush=True)
"""


def once(ranks):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    start = time.perf_counter()
    proc = subprocess.Popen(["mpirun", "-np", str(ranks), sys.executable, "-c", RANK],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    first = None
    for line in proc.stdout:
        if line.startswith("first result "):
            if line.split()[2] != "42":
                raise RuntimeError(line)
            first = time.perf_counter() - start
    proc.wait()
    if first is None:
        raise RuntimeError(f"no first result (mpirun ended with {proc.returncode})")
    return first, time.perf_counter() - start, proc.returncode


def main():
    ranks = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    samples = [once(ranks) for _ in range(runs)]
    firsts = sorted(s[0] for s in samples)
    print(json.dumps({"name": "mpi-startup", "peer": "dask-mpi", "params": {"ranks": ranks},
                      "median_s": statistics.median(firsts), "runs_s": firsts,
                      "all_exited_s": statistics.median(s[1] for s in samples),
                      "exit_codes": [s[2] for s in samples]}))


if __name__ == "__main__":
    main()
