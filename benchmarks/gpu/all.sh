#!/usr/bin/env bash
# Every GPU / scale benchmark in one go, each stage under its own time limit, so a
# slow stage cannot starve the others. Reports land in DEST (default
# benchmarks/results); DEST/stages.txt records each stage's exit status and time.
#
#   bash benchmarks/gpu/all.sh [DEST] [--quick | --cpu]
#
# --quick: small sizes, a smoke run (gpu_*_quick.md). --cpu: the CPU tables
# (gpu_*_cpu.md: the same meshes and data set size as on an accelerator, fewer
# training steps and sizes that fit a small CPU; ~30 min on 2 cores). No flag:
# the accelerator sizes reported in gpu_*_gpu.md and dgm_gpu.md.
set -u
DEST=${1:-benchmarks/results}
QUICK=${2:-}
PY=${PYTHON:-python}
mkdir -p "$DEST"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
stage() {   # stage NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s) ==="
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  local rc=$?
  echo "$name rc=$rc ${SECONDS}s-${t0}s=$((SECONDS - t0))s" | tee -a "$DEST/stages.txt"
}
$PY -c "import jax, jaxlib, flax, optax, diffrax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, 'diffrax', diffrax.__version__, jax.devices())"
if [ "$QUICK" = "--quick" ]; then
  stage diffinr_step 600 $PY benchmarks/gpu/diffinr_step.py --quick --out "$DEST/gpu_diffinr_step_quick.md"
  stage profile 600 $PY benchmarks/gpu/profile_hot_paths.py --quick --out "$DEST/gpu_profile_quick.md"
  stage forward 600 $PY benchmarks/gpu/forward_scaling.py --quick --out "$DEST/gpu_forward_quick.md"
  stage training 600 $PY benchmarks/gpu/training_throughput.py --quick --out "$DEST/gpu_training_quick.md"
  stage datagen 600 $PY benchmarks/gpu/datagen.py --quick --out "$DEST/gpu_datagen_quick.md"
  exit 0
fi
if [ "$QUICK" = "--cpu" ]; then
  stage diffinr_step 900 $PY benchmarks/gpu/diffinr_step.py --out "$DEST/gpu_diffinr_step_cpu.md"
  stage profile 1800 $PY benchmarks/gpu/profile_hot_paths.py --out "$DEST/gpu_profile_cpu.md"
  stage forward 1800 $PY benchmarks/gpu/forward_scaling.py --repeats 3 --out "$DEST/gpu_forward_cpu.md"
  stage training 1800 $PY benchmarks/gpu/training_throughput.py --sizes 32,64 --steps 3,12 \
    --out "$DEST/gpu_training_cpu.md"
  stage datagen 1800 $PY benchmarks/gpu/datagen.py --chunks 256 --out "$DEST/gpu_datagen_cpu.md"
  exit 0
fi
stage diffinr_step ${T_STEP:-45} $PY benchmarks/gpu/diffinr_step.py --out "$DEST/gpu_diffinr_step_gpu.md"
stage profile ${T_PROF:-60} $PY benchmarks/gpu/profile_hot_paths.py --out "$DEST/gpu_profile_gpu.md"
# the DGM study at a GPU-sized scale: 64 px, 6000 training pairs per setting, time-budgeted training
stage dgm ${T_DGM:-330} $PY benchmarks/dgm.py --size 64 --n-train 6000 --n-val 200 --n-test 200 \
  --batch-size 32 --train-seconds ${TRAIN_S:-12} --vae-epochs 100 --mlp-epochs 400 --cnf-epochs 100 --score-epochs 200 --csd-samples 8 --csd-steps 200 --csd-t0 0.3 --csd-sweep-n 50 \
  --dps-samples 4 --dps-steps 200 --dps-n-test 32 --dps-zetas 1,3,10,30 --dps-val 8 --skip-throughput \
  --workdir /tmp/dgm_gpu --out "$DEST/dgm/dgm_gpu.md" --no-progress
stage forward ${T_FWD:-75} $PY benchmarks/gpu/forward_scaling.py --out "$DEST/gpu_forward_gpu.md"
stage training ${T_TRAIN:-60} $PY benchmarks/gpu/training_throughput.py --out "$DEST/gpu_training_gpu.md"
stage datagen ${T_DATA:-50} $PY benchmarks/gpu/datagen.py --workdir /tmp --out "$DEST/gpu_datagen_gpu.md"
