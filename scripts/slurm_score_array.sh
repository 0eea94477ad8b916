#!/bin/bash
# Score a tod-clean run in shards on a SLURM array, then merge the parts into the run's scores.
#
#   sbatch --array=0-3 scripts/slurm_score_array.sh            # one task per shard (SHARDS=4)
#   sbatch --dependency=afterok:JOBID scripts/slurm_score_array.sh   # no array task id: merge
#
# Every task needs the run directory and the training and validation files (same content: their sha256
# is checked); shard K scores rows [K*R//SHARDS, (K+1)*R//SHARDS) of the R training rows.
# tests/runtime/test_shard.py runs the tod-clean commands below, exactly as written here.
#SBATCH --job-name=tod-clean-score
#SBATCH --cpus-per-task=2
#SBATCH --time=02:00:00
set -euo pipefail

RUN=${RUN:-tod-run}
VAL=${VAL:-val.jsonl}
SHARDS=${SHARDS:-4}
PARTS=${PARTS:-$RUN-parts}

if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    mkdir -p "$PARTS"
    tod-clean score --run "$RUN" --val "$VAL" --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" --out "$PARTS/part-$SLURM_ARRAY_TASK_ID.parquet" --quiet
else
    tod-clean merge "$PARTS"/part-*.parquet --run "$RUN" --out "$PARTS/scores.parquet"
fi
