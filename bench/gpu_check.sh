#!/usr/bin/env bash
# The GPU checks of issue 13 as one prepared command for a lent GPU machine (the workplace's `device` tool), which
# is bare but for PyTorch and the usual scientific stack, reaches no package index, and lends ~15 minutes in all:
#
#   here, once per session:  make gpu-wheels      (wheels of what that machine lacks, into .whl/, git-ignored)
#   there:                   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=560)
#
# It installs the wheels into /tmp/site, then: the GPU-marked tests (no host sync in a packed optimizer step, a CUDA
# run against a CPU one); the packed/single equivalence tests on cuda (OPTLAB_TEST_DEVICE=cuda: 1e-5 over 200
# steps, every packable optimizer and schedule); bench/packed.py on cuda (packed against one at a time, and against
# K). Logs land in $OUT (gpu.txt, gpu_tests.log, packed.txt); each step has its own time limit, so a slow one
# leaves the others' results.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/gpu.txt"
python3 -c "import db.store, db.migrate, workers.settings, workers.packed, workers.training, workers.optimizers" \
  || { echo "a package is missing there: add it to GPU_WHEELS in the Makefile"; exit 1; }
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_training.py tests/test_packed_optim.py 2>&1 \
  | tee "$OUT/gpu_tests.log"
OPTLAB_TEST_DEVICE=cuda timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_packed.py 2>&1 \
  | tee -a "$OUT/gpu_tests.log"
timeout 180 python3 bench/packed.py --device cuda 2>&1 | tee "$OUT/packed.txt"
