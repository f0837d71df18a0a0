#!/usr/bin/env bash
# The GPU check (issue 16), one prepared script: run it from anywhere on a machine with one CUDA
# GPU and the project's requirements installed. It installs nothing and downloads nothing (every
# model is built from a config with random weights), and finishes in under 8 minutes on one H200:
#
#   1. the half-precision and placement tests (tests/test_devices.py) on cuda, fp16 and bf16, for
#      every family and strategy, with the text encoders offloaded and on the CPU;
#   2. benchmarks/pipeline.py: SD1.5-shaped, 512², 20 steps, fp16, weighted vs plain prompt;
#   3. benchmarks/encode.py --device cuda in fp16 and fp32: promptweights against encode_prompt,
#      sd_embed's per-chunk loop and compel 2.5.1, with peak GPU memory;
#   3b. benchmarks/encode.py --t5 xxl --device cuda: Flux's T5-XXL-shaped text encoder in bf16,
#      promptweights a1111 against sd_embed's Flux function (issue 17; about half a minute);
#   4. benchmarks/a1111_rng.py: A1111's GPU noise source (torch's CUDA generator) against its NV
#      source (promptweights.a1111.philox) on the first draw, and the Brownian noise on the GPU;
#
# and writes benchmarks/RESULTS.md (the device named, each step's output verbatim). Commit it.
#
#   benchmarks/gpu.sh                 # the real run (needs torch with CUDA)
#   benchmarks/gpu.sh --dry-run       # every step on the CPU with tiny models (a minute or two),
#                                     # writing out/gpu-dry-run/RESULTS.md instead
#   PYTHON=/path/to/python benchmarks/gpu.sh   # another interpreter (default: python3)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the checkout, installed or not
export PYTHONDONTWRITEBYTECODE=1

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; fi

if [[ $DRY == 1 ]]; then
    DEVICE=cpu
    OUT="$ROOT/out/gpu-dry-run"
    export PROMPTWEIGHTS_TEST_FAMILIES=sd  # the SD 1.x family only
    PIPELINE_ARGS=(--tiny --device cpu --steps 2 --rounds 1)
    ENCODE_ARGS=(--tiny --device cpu --pairs 1 --repeat 1 --threads 1)
else
    DEVICE=cuda
    OUT="$ROOT/benchmarks"
    PIPELINE_ARGS=(--device cuda --dtype float16 --steps 20 --size 512 --rounds 5)
    ENCODE_ARGS=(--device cuda --repeat 5)
    if ! "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
        echo "gpu.sh: torch with CUDA is not available to $PY; nothing was run or written." >&2
        echo "        (benchmarks/gpu.sh --dry-run runs every step on the CPU)" >&2
        exit 2
    fi
fi
mkdir -p "$OUT"
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT

missing=$("$PY" - <<'EOF'
import importlib.util
needed = ["torch", "transformers", "diffusers", "accelerate", "peft", "lark", "pytest",
          "hypothesis", "compel", "safetensors", "PIL"]
print(" ".join(n for n in needed if importlib.util.find_spec(n) is None))
EOF
)
device_name=$("$PY" - "$DEVICE" <<'EOF'
import platform, sys
import torch
if sys.argv[1] == "cuda":
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, torch {torch.__version__}")
else:
    print(f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__} (dry run)")
EOF
)
echo "gpu.sh: device: $device_name"
[[ -n "$missing" ]] && echo "gpu.sh: missing packages (their steps fail): $missing"

status=0
step() {  # step NAME LIMIT_SECONDS COMMAND...: run, keep the output, never stop the script
    local name=$1 limit=$2
    shift 2
    echo "gpu.sh: $name"
    local start=$SECONDS
    timeout "$limit" "$@" >"$LOG/$name.txt" 2>&1
    local rc=$?
    echo "$rc $((SECONDS - start))" >"$LOG/$name.rc"
    tail -n 25 "$LOG/$name.txt"
    if [[ $rc != 0 ]]; then status=1; fi
}

# 1. Tests on the device, fp16 and bf16 (both dtypes are parameters of every test there).
TEST_CMD=("$PY" -m pytest -o addopts= -p no:randomly -p no:cacheprovider --strict-markers -q
          -W ignore::DeprecationWarning tests/test_devices.py)
export PROMPTWEIGHTS_TEST_DEVICE=$DEVICE
step tests 150 "${TEST_CMD[@]}"

# 2. Per-image overhead in a full pipeline run.
step pipeline 140 "$PY" -m benchmarks.pipeline "${PIPELINE_ARGS[@]}"

# 3. Conditioning: the model's own dtype (fp16 on a GPU), then float32 as the CPU table runs it.
if [[ $DRY == 1 ]]; then
    step encode 150 "$PY" -m benchmarks.encode "${ENCODE_ARGS[@]}" --dtype float16 --set mixed
else
    step encode 100 "$PY" -m benchmarks.encode "${ENCODE_ARGS[@]}" --dtype float16 --memory
    step encode-float32 60 "$PY" -m benchmarks.encode "${ENCODE_ARGS[@]}" --dtype float32
fi

# 3b. Flux's T5-XXL-shaped text encoder (issue 17), bf16: promptweights against sd_embed's Flux
#     function; 9.6 GB of random weights created on the device.
if [[ $DRY == 1 ]]; then
    step encode-flux 60 "$PY" -m benchmarks.encode --t5 small --device cpu --pairs 1 --threads 1
else
    step encode-flux 60 "$PY" -m benchmarks.encode --t5 xxl --device cuda --repeat 3
fi

# 4. A1111's noise sources (issue 18): CUDA's generator against the NV (Philox) source.
step a1111-rng 60 "$PY" -m benchmarks.a1111_rng --device "$DEVICE"

"$PY" - "$OUT/RESULTS.md" "$LOG" "$device_name" "$DRY" "$missing" <<'EOF'
import datetime
import sys
from pathlib import Path

out, log, device, dry, missing = sys.argv[1:6]
log = Path(log)
lines = [
    "# GPU results (`benchmarks/gpu.sh`)",
    "",
    ("A dry run on the CPU with tiny models: it checks the script, it measures nothing."
     if dry == "1" else "Written by `benchmarks/gpu.sh`; each step's output as printed."),
    "",
    f"- device: {device}",
    f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
]
if missing:
    lines.append(f"- missing packages: {missing}")
titles = {
    "tests": "Half precision and placement tests (`tests/test_devices.py`, fp16 and bf16)",
    "pipeline": "Per-image overhead (`benchmarks/pipeline.py`, SD1.5-shaped, fp16)",
    "encode": "Conditioning, model in fp16 (`benchmarks/encode.py`)",
    "encode-float32": "Conditioning, model in float32 (`benchmarks/encode.py`)",
    "encode-flux": "Flux, T5-XXL-shaped text encoder in bf16 (`benchmarks/encode.py --t5 xxl`)",
    "a1111-rng": "A1111's GPU noise source against NV (`benchmarks/a1111_rng.py`)",
}
for name, title in titles.items():
    if not (log / f"{name}.rc").exists():
        continue
    rc, seconds = (log / f"{name}.rc").read_text().split()
    state = "passed" if rc == "0" else ("timed out" if rc == "124" else f"FAILED (exit {rc})")
    text = (log / f"{name}.txt").read_text(errors="replace").rstrip().splitlines()
    lines += ["", f"## {title}", "", f"{state} in {seconds} s", "", "```", *text[-60:], "```"]
Path(out).write_text("\n".join(lines) + "\n")
print(f"gpu.sh: wrote {out}")
EOF
exit $status
