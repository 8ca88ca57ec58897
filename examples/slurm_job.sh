#!/bin/bash
# Monte Carlo pi over every node of a SLURM job: no SSH between the nodes needed.
#
#     sbatch examples/slurm_job.sh                    # from the project directory
#     sbatch --nodes=8 --ntasks-per-node=32 examples/slurm_job.sh
#
# dockkit reads the job's nodes and slots (SLURM_JOB_NODELIST, SLURM_TASKS_PER_NODE),
# starts one agent per node in one srun job step, and its workers connect straight
# back to the root (encrypted, authenticated). The script's exit status becomes the
# job's; when the job ends or is cancelled, nothing is left on any node.
# The project directory and the Python environment must be on a file system every
# node sees, at the same path (as home and project directories are on most sites).
#SBATCH --job-name=dockkit-pi
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=2
#SBATCH --output=dockkit-pi-%j.out
set -euo pipefail
# module load python/3.11          # or activate the environment that holds dockkit
dockkit run examples/monte_carlo_pi.py --tasks 96 --points 100000
