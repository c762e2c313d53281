#!/bin/bash
# A Slurm job that runs the ensemble with i-PI (--start-ipi) and resubmits itself until the
# run is done. Submit it from the run's directory (input.xml, init.xyz): sbatch job.sh
#
# --signal=B:USR1@300: 300 s before the time limit Slurm sends SIGUSR1 to this batch shell
# only (the B:); the trap below passes it on to mpiexec, which (MPICH's hydra) passes it to
# every rank; rank 0 asks i-PI for its soft exit (RESTART), the rows are written, and the
# job ends with status 75: "stopped, run the same command to continue". Without B: Slurm
# signals the processes of the job's steps but not this shell; that works too when the
# ranks run in a step (srun, or hydra's proxies started by srun): i-PI ignores SIGUSR1 and
# rank 0 stops it. At the limit itself Slurm sends SIGTERM, then SIGKILL: a job killed
# there continues from i-PI's periodic <checkpoint> instead.
#SBATCH --job-name=ensemble
#SBATCH --nodes=1
#SBATCH --ntasks=4
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --output=job-%j.out

M=${MODELS:-models}   # the directory of m0.pth .. m3.pth

mpiexec -n 4 ensemble-driver run --models $M/m0.pth $M/m1.pth $M/m2.pth $M/m3.pth \
    --ipi-input input.xml --start-ipi --out-freq 10 &
pid=$!
trap 'kill -USR1 $pid' USR1
# a trapped signal ends `wait` early (status 138): wait for mpiexec until it has ended,
# then take its own status, which bash keeps for a background job
while :; do
    wait $pid
    status=$?
    kill -0 $pid 2>/dev/null || break
done
wait $pid 2>/dev/null
last=$?
[ $last -ne 127 ] && status=$last

if [ $status -eq 75 ]; then   # stopped restartably: the next job continues the run
    cd "$SLURM_SUBMIT_DIR" && sbatch job.sh
fi
exit $status
