#!/usr/bin/env bash
# Runs tpu_scripts/train.py for one experiment, on the TPU VM workers (default) or here (LOCAL=1).
# Used by launch_resnet50.sh and launch_efficientnet.sh; arguments are passed to train.py.
#
# Required: MODEL_DIR (gs://... for TPU runs), DATA_DIR (folder of train-*/validation-* TFRecords
# written by tpu_scripts/prepare_imagenet.py). Optional: TPU_NAME, ZONE, PROJECT, LOCAL=1,
# TPU [local; empty for GPU runs], DRY_RUN=1 (print the command instead of running it).
set -euo pipefail

: "${MODEL_DIR:?set MODEL_DIR, e.g. gs://BUCKET/runs}"
: "${DATA_DIR:?set DATA_DIR, e.g. gs://BUCKET/imagenet-2012-tfrecord}"
TPU_NAME="${TPU_NAME:-evonorm-tpu}"
ZONE="${ZONE:-europe-west4-a}"
PROJECT_FLAG=${PROJECT:+--project=${PROJECT}}
# On a Cloud TPU VM the TPU is local: --tpu=local. (Model Garden sets runtime.tpu from --tpu,
# overriding any YAML value; with a TPU node instead of a TPU VM, pass its name or grpc:// address.)
TPU="${TPU-local}"

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

COMMAND=(python3 tpu_scripts/train.py --mode=train_and_eval)
[[ -n "${TPU}" ]] && COMMAND+=(--tpu="${TPU}")
COMMAND+=("${ARGS[@]}")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${COMMAND[@]}"; echo
  exit 0
fi
if [[ "${LOCAL:-0}" == 1 ]]; then
  cd "$(dirname "$0")/.."
  exec "${COMMAND[@]}"
fi
printf -v QUOTED '%q ' "${COMMAND[@]}"
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" ${PROJECT_FLAG} --zone="${ZONE}" --worker=all \
  --command="cd evonorm_tf && ${QUOTED}"
