#!/usr/bin/env bash
# Trains the model shipped as models/default.safetensors (issue 5) and ships it: the tiny config on
# the built-in synthetic generator (seed 1, every sample new), focal loss (γ = 2), Adam with a
# cosine schedule, on the CPU. Took about 85 minutes on the 2-core dev machine (see the README).
#   bash scripts/train-default.sh [RUN_DIR]        (default runs/default)
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/default}
command="safl train --config tiny --data synth --val synth --val-samples 300 --iterations 7500 --batch-size 64 --lr 0.001 --schedule cosine --warmup 800 --checkpoint-dir $run --checkpoint-every 500 --validate-every 2000 --log-every 50 --seed 1"
# shellcheck disable=SC2086 # the command is split into its words on purpose
node dist/cli.js ${command#safl }
node scripts/ship-model.js --run "$run" --command "$command"
