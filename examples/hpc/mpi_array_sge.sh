#!/bin/bash -l
# The tutorial's dask-mpi batch job on Grid Engine, the shoal way:
#   qsub examples/hpc/mpi_array_sge.sh
# One job of 8 slots on one node; mpirun starts the program as ranks:
# rank 0 the scheduler, rank 1 main, the others the workers.
#$ -cwd -V
#$ -l h_rt=01:00:00
#$ -pe smp 8
#$ -l h_vmem=48G

# Linear-algebra libraries use one thread each: the workers' threads are
# the parallelism.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# module load openmpi     # where the cluster has modules

# Ranks 0 and 1 (the scheduler and main) mostly wait, so they share the
# slots and every slot runs a worker: NSLOTS + 2 ranks.
PROGRAM=${PROGRAM:-target/release/examples/mpi_array}
mpirun --oversubscribe -np $((NSLOTS + 2)) "$PROGRAM" "$@"
