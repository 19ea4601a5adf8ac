#!/usr/bin/env bash
# Reproduce weights/msconv_resnet50_open_distill.weights.h5 from ../shared/data (hours of CPU).
#
# The published run changed its phases seven times while running (--reschedule, recorded in its
# checkpoints and in docs/open_distill/README.md); this script replays the same schedule: each
# command continues the previous one's checkpoint up to the step where the run's phases changed.
# The published run was also moved between machines (at steps 3212, 4080 and 4421, through the
# float16 repository checkpoint: first moments reset) and trained in float32 from step 4089 to 4421
# on a CPU without bfloat16 units, so a replay matches it in schedule and data order, not bit for bit.
#
#   bash scripts/reproduce_open_distill.sh [CACHE_DIR]      (default /work/cache/open_distill_replay)
#   TRAIN_ARGS=--no-bf16 bash scripts/reproduce_open_distill.sh   (float32 throughout: for a CPU
#                                   without bfloat16 units, where autocast is many times slower)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${1:-/work/cache/open_distill_replay}
train() { nice -n 19 "$PY" scripts/train_open_distill.py --threads 2 --cache-dir "$CACHE" \
    --docs-dir "$CACHE/docs" ${TRAIN_ARGS:-} "$@"; }

train --phases 64:18,112:2 --max-steps 3396
train --resume --reschedule --phases 64:16,112:2 --max-steps 3477
train --resume --reschedule --phases 64:15,112:1 --max-steps 3563
train --resume --reschedule --phases 64:10,112:3 --max-steps 3607
train --resume --reschedule --phases 64:10,112:2
train --resume --reschedule --phases 64:10,112:8 --max-steps 4113
train --resume --reschedule --phases 64:10,112:5 --max-steps 4460
train --resume --reschedule --phases 64:10,112:9

"$PY" -m keras_fr.cli convert "$CACHE/ckpt/last.pt" --arch msconv_resnet50 \
    --output "$CACHE/msconv_resnet50_open_distill.weights.h5" --storage-dtype float16 \
    --verify-images ../shared/data/faces_distill/images/utkface --samples 8
echo "weights: $CACHE/msconv_resnet50_open_distill.weights.h5"
