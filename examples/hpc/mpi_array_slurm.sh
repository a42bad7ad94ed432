#!/bin/bash -l
# The tutorial's dask-mpi batch job on SLURM, the shoal way:
#   sbatch examples/hpc/mpi_array_slurm.sh
# srun starts the program as ranks: rank 0 the scheduler, rank 1 main, the
# others the workers (one per task).
#SBATCH -J mpi_array
#SBATCH -t 01:00:00
#SBATCH --ntasks=8
#SBATCH --overcommit
#SBATCH --mem=48G

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

# Across nodes, srun passes the scheduler's address with --mpi=pmi2; on one
# node any srun does.
PROGRAM=${PROGRAM:-target/release/examples/mpi_array}
srun --mpi=pmi2 "$PROGRAM" "$@"
