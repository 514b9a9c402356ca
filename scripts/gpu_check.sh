#!/usr/bin/env bash
# The whole GPU check in one go, on a machine with a CUDA GPU:
#   benchmarks (tiny: 1 and 4 objects; large: 1 object; a 600-frame memory soak), the CUDA-only
#   tests, and optionally sam2's compiled predictor. JSON and logs go to OUT (default benchmarks/).
#
#   scripts/run.sh bash scripts/gpu_check.sh                       # in the project's environment
#   WHEELS=dir FRAMES=dir OUT=dir bash scripts/gpu_check.sh        # an offline GPU box with torch:
#                                                                  # installs the wheels in WHEELS first
# Each step has its own time limit and a failing step does not stop the others. Environment:
#   FRAMES (default ../shared/data/bedroom), N frames (60), SIZE (1024), SOAK frames (600),
#   REPEATS (3): interleaved timing rounds of the 1-object and compile benchmarks (medians and
#   per-round ratios; the 4-object run, the soak and fp32 time once),
#   COMPILE=all|encoder|router, or several ("router encoder"; 1 = all) also measures each of those
#   torch_compile modes (official, dense, keep 0.3): a cold start (empty kernel cache) and a
#   restart, for the models in COMPILE_MODELS ("tiny large"); a mode with "+casts"
#   ("encoder+casts") compiles with Inductor's emulate_precision_casts (bf16 rounded where eager
#   rounds it: does keep 1.0 then still equal the official predictor?),
#   SKIP: steps not to run ("tiny_4obj large_1obj cuda_tests"; a short lease's choice; spaces or
#   commas; a compile step's cold start skipped skips its restart; a name of no step is reported),
#   FP32=1 also runs large in fp32 (official and keep 1.0: their IoU without bf16's rounding),
#   ATTENTION=1 also times memory attention's attention kernel alone at the tracker's shapes, with
#   each sdpa kernel (python -m fastsam2_ros.attention_probe; seconds),
#   BACKEND=name also measures tiny (official, dense, keep 0.3) with attention_backend name (one of
#   ATTENTION_BACKENDS in core/config.py; e.g. flash beside the default auto, torch's pick;
#   optional, within BUDGET),
#   VOS=seconds to give sam2's torch.compile'd predictor (default 0: skipped), STEP_LIMIT (420 s),
#   BUDGET=seconds: no optional step (compile, VOS) starts with less than 30 s of it left, none
#   runs past it, and a skipped one says so (default 100000),
#   DEADLINE=seconds: no step at all runs past it (each limit is cut to what is left) and none
#   starts with less than 20 s left, so a command killed at a fixed limit (a lent machine's 600 s)
#   ends its steps, packs and reports first (default 100000); BUDGET, DEADLINE, VOS and STEP_LIMIT
#   are whole seconds. A compile restart runs only after its cold start succeeded. Every bench step
#   rewrites its JSON after each measured mode, so a step cut by its limit keeps what it measured,
#   ARCHIVE=file.tgz: packs OUT into it after every step (for machines that return few files;
#   written through a temporary file, so a kill while packing keeps the previous archive),
#   FASTSAM2_COMMIT: the commit the JSON records where this copy has no .git (a lent machine),
#   DEVICE (cuda): cpu makes it a dry run of every step (defaults N=3, SIZE=64, SOAK=4, REPEATS=2;
#   the tests run it so).
# It exits 1 when a step failed, timed out or was skipped by DEADLINE; a step skipped by BUDGET is
# not a failure. Bad settings (N, SIZE, SOAK, REPEATS not whole numbers, a SIZE SAM 2 cannot run,
# DEVICE other than cpu/cuda/cuda:N, a COMPILE mode that does not exist) exit 2 before any step.
set -u
cd "$(dirname "$0")/.."
DEVICE="${DEVICE:-cuda}"
if [ "$DEVICE" = cpu ]; then  # a dry run: every step, small and quick
  N="${N:-3}" SIZE="${SIZE:-64}" SOAK="${SOAK:-4}" REPEATS="${REPEATS:-2}"
fi
OUT="${OUT:-benchmarks}"
FRAMES="${FRAMES:-../shared/data/bedroom}"
N="${N:-60}"
SIZE="${SIZE:-1024}"
SOAK="${SOAK:-600}"
VOS="${VOS:-0}"
STEP_LIMIT="${STEP_LIMIT:-420}"
REPEATS="${REPEATS:-3}"
COMPILE="${COMPILE:-0}"
[ "$COMPILE" = "1" ] && COMPILE=all
COMPILE_MODELS="${COMPILE_MODELS:-tiny large}"
FP32="${FP32:-0}"
ATTENTION="${ATTENTION:-0}"
BACKEND="${BACKEND:-}"
BUDGET="${BUDGET:-100000}"
DEADLINE="${DEADLINE:-100000}"
TAG="${TAG:-gpu}"
for var in BUDGET DEADLINE VOS STEP_LIMIT N SIZE SOAK REPEATS; do  # (bash arithmetic and `[ -lt ]`
  case "${!var}" in                                                  # take whole numbers only)
    ''|*[!0-9]*) echo "$var must be a whole number, got '${!var}'" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  cpu|cuda|cuda:[0-9]|cuda:[0-9][0-9]) ;;
  *) echo "DEVICE must be cpu, cuda or cuda:N, got '$DEVICE'" >&2; exit 2 ;;
esac
config_choices() {  # config_choices NAME: the words of the tuple NAME in core/config.py, space-padded
  # (their one definition; these checks run before Python and the wheels are set up)
  local words
  words=$(echo $(sed -n "s/^$1 = (\(.*\))\$/\1/p" fastsam2_ros/fastsam2_ros/core/config.py | tr -d '",'))
  if [ -z "$words" ]; then
    echo "cannot read $1 from fastsam2_ros/fastsam2_ros/core/config.py" >&2; return 1
  fi
  echo " $words "
}
compile_modes=$(config_choices COMPILE_MODES) || exit 2
compile_modes=${compile_modes/ none / }  # (the modes to ask for: "none" is no compile)
backends=$(config_choices ATTENTION_BACKENDS) || exit 2
if [ -n "$BACKEND" ] && [[ "$backends" != *" $BACKEND "* ]]; then
  echo "BACKEND takes $(echo $backends | sed 's/ /, /g'), got '$BACKEND'" >&2; exit 2
fi
for spec in $([ "$COMPILE" = 0 ] || echo "$COMPILE"); do
  if [[ "$compile_modes" != *" ${spec%+casts} "* ]]; then
    said=$(echo $compile_modes | sed 's/ /, /g')
    echo "COMPILE takes $said (each with +casts), got '$spec'" >&2; exit 2
  fi
done
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fastsam2_site "$WHEELS"/*.whl \
    || { echo "installing the wheels from $WHEELS failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/fastsam2_site:$PWD/fastsam2_ros${PYTHONPATH:+:$PYTHONPATH}"
fi
PY="${PYTHON:-python3}"
DEVICE="$DEVICE" SIZE="$SIZE" "$PY" - <<'EOF' || exit $?
# everything the steps import, and a model built (a module missing inside sam2's build, such as
# portalocker, is named here, in seconds, not once per step behind hydra's "Error locating target")
import os, sys, torch, sam2, fastsam2_ros.core, fastsam2_ros.bench, scipy, pytest
from fastsam2_ros.core import InputError, TrackerConfig
from fastsam2_ros.core.models import build_predictor
try:  # a size every step would refuse is a bad setting (2), not a failed step each
    TrackerConfig(image_size=int(os.environ["SIZE"]))
except InputError as exc:
    print(f"SIZE: {exc}", file=sys.stderr)
    sys.exit(2)
device = torch.device(os.environ["DEVICE"])
assert device.type != "cuda" or torch.cuda.is_available(), "no CUDA device"
build_predictor(TrackerConfig(model_cfg="tiny", allow_random_weights=True, image_size=64, device="cpu"))
print("torch", torch.__version__, "|", torch.cuda.get_device_name(device) if device.type == "cuda"
      else device, "| sam2", sam2.__file__)
EOF

status=() failed=0 jsons=()  # jsons: this run's bench JSON files, for the summary at the end
SKIP="${SKIP:-}"
SKIP=" ${SKIP//,/ } " known=" "  # known: every step this run names, run or not (SKIP's typo check)
SKIPPED=3  # run_step's status for a step in SKIP (not a failure; a compile's restart follows none)
run_step() {  # run_step NAME CMD...: CMD, its log under OUT, within its limit (STEP_TIMEOUT, else
  local name="$1"; shift  # STEP_LIMIT) cut to what is left before DEADLINE
  local left=$((DEADLINE - SECONDS)) limit="${STEP_TIMEOUT:-$STEP_LIMIT}" t0=$SECONDS
  known+="$name "
  if [[ "$SKIP" == *" $name "* ]]; then
    status+=("$name skipped (SKIP)"); echo "$name skipped (SKIP)"
    return "$SKIPPED"
  fi
  if [ "$left" -lt 20 ]; then
    status+=("$name skipped (deadline: ${left}s left)"); echo "$name skipped (deadline: ${left}s left)"
    failed=1; return 1
  fi
  [ "$((left - 5))" -lt "$limit" ] && limit=$((left - 5))  # (5 s for a kill after the TERM)
  timeout -k 5 "$limit" "$@" >"$OUT/${TAG}_${name}.log" 2>&1
  local rc=$?
  status+=("$name rc=$rc $((SECONDS - t0))s")
  [ "$rc" -ne 0 ] && failed=1
  grep -v "^  warnings.warn\|UserWarning" "$OUT/${TAG}_${name}.log" | tail -n 14
  pack
  return $rc
}
step() {  # step NAME ARGS...: one bench run, JSON + log under OUT
  local name="$1"; shift
  local json="$OUT/${TAG}_${name}.json"
  rm -f "$json"  # (an earlier run's file must not pass for this run's in the summary)
  jsons+=("$json")
  run_step "$name" "$PY" -m fastsam2_ros.bench --random-weights --device "$DEVICE" \
      --frames "$FRAMES" --max-frames "$N" --image-size "$SIZE" --json "$json" "$@"
}
off() {  # off NAME: a step this run's settings leave out (named in SKIP, it is no typo)
  known+="$1 "
}
optional() {  # optional NAME ARGS...: a step only while BUDGET lasts, its limit cut to what is left
  local left=$((BUDGET - SECONDS)) limit="${STEP_TIMEOUT:-$STEP_LIMIT}"
  known+="$1 "
  if [ "$left" -lt 30 ]; then
    status+=("$1 skipped (budget: ${left}s left)"); echo "$1 skipped (budget: ${left}s left)"
    return 1
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  STEP_TIMEOUT=$limit step "$@"
}
pack() {  # (an archive inside OUT is left out of itself; a rename, so a kill keeps the last one)
  if [ -n "${ARCHIVE:-}" ]; then  # OUT's entries, not OUT itself: tar refused "." with "file
    local name; name="$(basename "$ARCHIVE")"  # changed as we read it" when the archive grew in it
    (cd "$OUT" && find . -mindepth 1 -maxdepth 1 ! -name "$name" ! -name "$name.tmp" -print0) \
      | tar czf "$ARCHIVE.tmp" -C "$OUT" --null -T - && mv -f "$ARCHIVE.tmp" "$ARCHIVE" \
      || echo "packing $OUT into $ARCHIVE failed: it holds the steps before" >&2
  fi
}

step tiny_1obj --model tiny --click 210,350 --keep-ratios 0.1,0.3,0.5 --repeats "$REPEATS"
step tiny_4obj --model tiny --objects 4 --click "210,350;620,260;450,420;800,150" --keep-ratios 0.3
step large_1obj --model large --click 210,350 --keep-ratios 0.3 --repeats "$REPEATS"
if [ "$SOAK" != "0" ]; then
  step tiny_soak --model tiny --click 210,350 --modes pruned --keep-ratios 0.3 --soak "$SOAK" --no-profile
else off tiny_soak; fi
if [ "$FP32" != "0" ]; then
  step large_1obj_fp32 --model large --click 210,350 --modes official,dense --no-bf16 --no-profile
else off large_1obj_fp32; fi

run_step cuda_tests "$PY" -m pytest fastsam2_ros/test/test_cuda_fast_path.py -q -p no:cacheprovider
if [ "$ATTENTION" != "0" ]; then  # memory attention's kernel alone: each sdpa kernel
  if [ $((BUDGET - SECONDS)) -lt 30 ]; then
    known+="attention_probe "; status+=("attention_probe skipped (budget)")
  else
    run_step attention_probe "$PY" -m fastsam2_ros.attention_probe --device "$DEVICE" \
        $([ "$DEVICE" = cpu ] && echo --small) --json "$OUT/${TAG}_attention_probe.json"
  fi
else off attention_probe; fi
if [ -n "$BACKEND" ]; then  # the tracker with another sdpa kernel first (official, dense, 0.3)
  optional "tiny_1obj_attention_$BACKEND" --model tiny --click 210,350 --keep-ratios 0.3 \
      --attention-backend "$BACKEND" --repeats "$REPEATS"
else for b in $backends; do off "tiny_1obj_attention_$b"; done; fi

if [ "$COMPILE" != "0" ]; then  # cold start with an empty kernel cache, then a restart that reuses it
  for spec in $COMPILE; do
    mode="${spec%+casts}" casts=0
    [ "$mode" != "$spec" ] && casts=1
    for model in $COMPILE_MODELS; do
      cache="$(mktemp -d)" name="${model}_compile_${mode}$([ "$casts" = 1 ] && echo _casts)"
      for start in cold restart; do  # a restart after a failed cold start would time a cold one
        # (with the kernel profile: what the compiled router or encoder costs per stage)
        TORCHINDUCTOR_EMULATE_PRECISION_CASTS=$casts \
        optional "${name}_${start}" --model "$model" --click 210,350 --keep-ratios 0.3 \
            --torch-compile "$mode" --compile-cache-dir "$cache" --repeats "$REPEATS" \
          || { [ "$start" = cold ] && status+=("${name}_restart skipped (no cold start)"); break; }
      done
    done
  done
fi
if [ "$VOS" != "0" ]; then  # the official run plus sam2's compile (up to VOS s)
  STEP_TIMEOUT=$((VOS + STEP_LIMIT)) optional tiny_official_vos --model tiny --click 210,350 \
      --modes official --official-vos --vos-time-limit "$VOS" --no-profile
else off tiny_official_vos; fi
for word in $SKIP; do  # a typo would have run a step the lease had no time for: say so (a step
  [[ "$known" == *" $word "* ]] && continue  # that is off: nothing to say; compile steps of
  [[ "$word" == *_compile_*_cold || "$word" == *_compile_*_restart ]] && continue  # other runs)
  status+=("SKIP names no step: $word")
done
printf '%s\n' "${status[@]}"
# then every step's modes in a few lines (a step cut by its limit: what it measured): a lease's
# output keeps only its tail, where the steps' own tables are long gone
timeout 60 "$PY" - "${jsons[@]}" <<'EOF' | tee "$OUT/${TAG}_summary.txt"
import json, os, sys
from fastsam2_ros.bench import summary_lines
written = [path for path in sys.argv[1:] if os.path.exists(path)]
if not written:
    print("no step wrote a JSON file")
for path in written:
    try:
        report = json.load(open(path))
    except (OSError, ValueError) as exc:
        print(f"{path}: unreadable ({exc})")
        continue
    print("\n".join(summary_lines(report, os.path.basename(path)[:-len(".json")])))
EOF
pack
exit "$failed"
