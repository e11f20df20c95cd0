#!/usr/bin/env bash
# The CUDA backend's device check (issue #13), run on a GPU machine that has
# no Rust toolchain: the test and bench binaries are built elsewhere with
#   cargo test --release --features cuda --no-run --test suite
#   cargo build --release --features cuda --example bench_vgg16
# and copied (stripped) into $BIN (default .device/bin): `suite` and `bench_vgg16`.
#
# It finds the CUDA libraries (cuBLAS, NVRTC) in the Python environment's
# `nvidia` packages, runs the GPU tests (parity on every golden, determinism),
# times VGG16 RSP at batch 1, 16 and 64 in f32 and f64, and PyTorch's VGG16
# forward pass on the same device for the ratio. Each result is one JSON line;
# everything is also written to $OUT (or ./device-out) as device-check.log.
#
# Usage: bash scripts/device-check.sh [--dry-run]
# Environment: DTYPES (default "f32 f64"), BATCHES ("1 16 64"), TEST_TIMEOUT
# (seconds for the tests, 200), BENCH_TIMEOUT (seconds per bench run, 60).
#   --dry-run: the CPU backend instead of CUDA and batch 1 only (a check of
#   the script itself on a machine without a GPU).
set -u -o pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.device/bin}
OUT=${OUT:-device-out}
mkdir -p "$OUT"
LOG="$OUT/device-check.log"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
exec > >(tee "$LOG") 2>&1

# The test binary reads tests/data through the path it was built at.
BUILT_AT=${BUILT_AT:-/work/main}
if [ ! -e "$BUILT_AT/tests/data" ]; then
  mkdir -p "$(dirname "$BUILT_AT")" && ln -sfn "$PWD" "$BUILT_AT"
fi

if [ $DRY = 0 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  LIBS=$(python3 - <<'PY'
import os, glob
dirs = set()
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
for root in roots:
    for pat in ("**/libcublas.so*", "**/libnvrtc.so*", "**/libcublasLt.so*", "**/libnvrtc-builtins.so*"):
        for f in glob.glob(os.path.join(root, pat), recursive=True):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
  export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "CUDA libraries from: $LIBS"
fi

echo "== tests"
if [ $DRY = 0 ]; then
  timeout "${TEST_TIMEOUT:-200}" "$BIN/suite" cuda --include-ignored --nocapture --test-threads 1 2>&1 | grep -v "^test .* ignored"
  echo "{\"check\":\"cuda_tests\",\"exit\":$?}"
else
  timeout 300 "$BIN/suite" cuda --nocapture --test-threads 1
  echo "{\"check\":\"cuda_tests\",\"exit\":$?}"
fi

echo "== bench"
BACKEND=cuda
BATCHES=${BATCHES:-1 16 64}
[ $DRY = 1 ] && BACKEND=cpu && BATCHES=1
for dtype in ${DTYPES:-f32 f64}; do
  for batch in $BATCHES; do
    runs=5
    [ "$batch" = 64 ] && runs=3
    timeout "${BENCH_TIMEOUT:-60}" "$BIN/bench_vgg16" --backend $BACKEND --dtype $dtype --batch "$batch" --runs $runs --warmup 1 --threads 16 2>"$OUT/bench_${dtype}_${batch}.err" | grep '^{' \
      || { echo "{\"bench\":\"failed\",\"dtype\":\"$dtype\",\"batch\":$batch}"; tail -5 "$OUT/bench_${dtype}_${batch}.err"; }
  done
done

if [ $DRY = 0 ]; then
  echo "== bench, float32 with TF32 (opt-in)"
  for batch in ${TF32_BATCHES:-16 64}; do
    timeout "${BENCH_TIMEOUT:-60}" "$BIN/bench_vgg16" --backend cuda --tf32 --dtype f32 --batch "$batch" --runs 3 --warmup 1 --threads 16 2>"$OUT/bench_tf32_${batch}.err" | grep '^{' \
      || { echo "{\"bench\":\"failed\",\"tf32\":true,\"batch\":$batch}"; tail -5 "$OUT/bench_tf32_${batch}.err"; }
  done
fi

if [ $DRY = 0 ]; then
  for batch in ${PROFILE_BATCHES:-1 64}; do
    echo "== profile: f32, batch $batch, one timed run after one warm-up (totals of both; each operation waits for the device)"
    RSP_CUDA_PROFILE=1 timeout 90 "$BIN/bench_vgg16" --backend cuda --dtype f32 --batch "$batch" --runs 1 --warmup 1 --threads 16 2>&1 \
      | grep -E "^profile" | head -30
  done
fi

if [ $DRY = 0 ]; then
  echo "== PyTorch VGG16 forward, same device"
  timeout 90 python3 - <<'PY'
import json, torch, torchvision
torch.backends.cudnn.benchmark = True
for dtype in (torch.float32, torch.float64):
    for tf32 in ((False, True) if dtype == torch.float32 else (False,)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        model = torchvision.models.vgg16().to("cuda", dtype).eval()
        for batch in (1, 16, 64):
            x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype)
            with torch.no_grad():
                for _ in range(3):
                    model(x)
                torch.cuda.synchronize()
                times = []
                for _ in range(10 if dtype == torch.float32 else 3):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record(); model(x); b.record(); torch.cuda.synchronize()
                    times.append(a.elapsed_time(b))
            times.sort()
            print(json.dumps({"torch_vgg16_forward": True, "dtype": str(dtype).split(".")[1], "tf32": tf32,
                              "batch": batch, "ms_per_image": round(times[len(times)//2] / batch, 3)}))
PY
fi
echo "== done"
