#!/usr/bin/env bash
# Starts tpu_scripts/train.py for one experiment on a Cloud TPU VM, detached, by the slice's topology.
# Used by launch_resnet50.sh, launch_efficientnet.sh and launch_maskrcnn.sh; arguments go to train.py.
#
# Single-host slices (v2-8, v3-8, v4-8, v5p-8, v5litepod-1/4/8, ...): worker 0 runs the trainer on its
#   own chips, `--tpu=local`, with the TensorFlow TPU build's PJRT environment
#   NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so.
# Pod slices (v3-32, v4-16, ...): worker 0 alone runs the trainer with `--tpu=TPU_NAME` and
#   TPU_LOAD_LIBRARY=0: it does not open its own chips but connects to the TPU worker service of
#   every host (TPUClusterResolver, as Model Garden's distribute_utils does for a TPU name).
# Either way the trainer runs under tpu_scripts/run_detached.sh: it survives a dropped SSH session,
# its log goes to MODEL_DIR/train.log, and the same command run again resumes from the newest
# checkpoint in MODEL_DIR (Model Garden's trainer restores it).
#
# Required: MODEL_DIR (gs://... for TPU runs), DATA_DIR (folder of train-*/validation-* TFRecords
# written by tpu_scripts/prepare_imagenet.py). Optional: TPU_NAME [evonorm-tpu], ZONE
# [europe-west4-a], PROJECT, ACCELERATOR_TYPE (read with `gcloud compute tpus tpu-vm describe`
# when unset; required with DRY_RUN=1), MODE [train_and_eval; eval: evaluate the newest checkpoint
# in MODEL_DIR once], DRY_RUN=1 (print the commands instead of running them), LOCAL=1 (run train.py
# here in the foreground, e.g. on GPUs; TPU="" leaves out --tpu).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tpu_scripts/tpu_vm.sh
source "${HERE}/tpu_vm.sh"

: "${MODEL_DIR:?set MODEL_DIR, e.g. gs://BUCKET/runs}"
: "${DATA_DIR:?set DATA_DIR, e.g. gs://BUCKET/imagenet-2012-tfrecord}"
TPU_NAME="${TPU_NAME:-evonorm-tpu}"
case "${MODE:-train_and_eval}" in
  train_and_eval|train|eval) ;;
  *) echo "run_on_tpu_vm.sh: unknown MODE '${MODE}'; use train_and_eval, train or eval" >&2; exit 2 ;;
esac
ZONE="${ZONE:-europe-west4-a}"
GCLOUD_FLAGS=(--zone="${ZONE}")
[[ -n "${PROJECT:-}" ]] && GCLOUD_FLAGS+=(--project="${PROJECT}")

# Callers whose files are named otherwise (launch_maskrcnn.sh: val*, plus the COCO json) set DATA_OVERRIDE.
DATA_OVERRIDE="${DATA_OVERRIDE:-task.train_data.input_path=${DATA_DIR}/train*,task.validation_data.input_path=${DATA_DIR}/valid*}"
ARGS=("$@")
# Fold the data paths into the last --params_override, or add one.
found=0
for i in "${!ARGS[@]}"; do
  if [[ "${ARGS[$i]}" == --params_override=* ]]; then
    ARGS[$i]="${ARGS[$i]},${DATA_OVERRIDE}"
    found=1
  fi
done
if [[ ${found} == 0 ]]; then
  ARGS+=("--params_override=${DATA_OVERRIDE}")
fi

if [[ "${LOCAL:-0}" == 1 ]]; then
  COMMAND=(python3 tpu_scripts/train.py --mode="${MODE:-train_and_eval}")
  [[ -n "${TPU-}" ]] && COMMAND+=(--tpu="${TPU}")
  COMMAND+=("${ARGS[@]}")
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf -v LINE '%q ' "${COMMAND[@]}"
    echo "${LINE% }"
    exit 0
  fi
  cd "${HERE}/.."
  exec "${COMMAND[@]}"
fi

if [[ -z "${ACCELERATOR_TYPE:-}" ]]; then
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "run_on_tpu_vm.sh: DRY_RUN=1 needs ACCELERATOR_TYPE (e.g. v3-8, v3-32, v4-8)" >&2
    exit 2
  fi
  ACCELERATOR_TYPE="$(gcloud compute tpus tpu-vm describe "${TPU_NAME}" "${GCLOUD_FLAGS[@]}" \
    --format='value(acceleratorType)')"
fi
HOSTS="$(tpu_hosts "${ACCELERATOR_TYPE}")" || exit 2

COMMAND=(tpu_scripts/run_detached.sh python3 tpu_scripts/train.py --mode="${MODE:-train_and_eval}")
if [[ "${HOSTS}" == 1 ]]; then
  ENVIRONMENT=(NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so)
  COMMAND+=(--tpu=local)
else
  ENVIRONMENT=(TPU_LOAD_LIBRARY=0)
  COMMAND+=(--tpu="${TPU_NAME}")
fi
COMMAND+=("${ARGS[@]}")
printf -v REMOTE 'cd evonorm_tf && env %s %s' "${ENVIRONMENT[*]}" "$(printf '%q ' "${COMMAND[@]}")"
SSH="$(ssh_command "${TPU_NAME}" "${GCLOUD_FLAGS[@]}" --worker=0 -- "${REMOTE% }")"
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  echo "# ${ACCELERATOR_TYPE}: ${HOSTS} host(s)"
  echo "${SSH}"
  exit 0
fi
eval "${SSH}"
