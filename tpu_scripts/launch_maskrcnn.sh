#!/usr/bin/env bash
# Mask R-CNN on COCO with one norm-act (official_configs/maskrcnn_{resnet50fpn,spinenet*}_*_tpu.yaml).
#
#   MODEL_DIR=gs://BUCKET/runs DATA_DIR=gs://BUCKET/coco ACCELERATOR_TYPE=v3-32 \
#     tpu_scripts/launch_maskrcnn.sh evonorm_b0 [resnet50fpn|spinenet49|spinenet96|spinenet143]
#
# NORM_ACT: resnet50fpn (default): bn_relu (v1.5 backbone, sync BN), evonorm_b0, evonorm_s0 (v2
# backbone); spinenet49/96/143: evonorm_b0. DATA_DIR holds what tpu_scripts/prepare_coco.py writes:
# train-*, val-* TFRecords and instances_val2017.json.
# Starts a detached run on the TPU VM TPU_NAME via run_on_tpu_vm.sh (a v3-32 pod slice: worker 0 drives
# all 4 hosts with --tpu=TPU_NAME); the configs expect 32 cores.
set -euo pipefail
NORM_ACT="${1:?usage: launch_maskrcnn.sh NORM_ACT [resnet50fpn|spinenet49|spinenet96|spinenet143]}"
BACKBONE="${2:-resnet50fpn}"
HERE="$(dirname "$0")"
case "${BACKBONE}" in
  resnet50fpn) EXPERIMENT=evonorm_maskrcnn_resnetfpn_coco ;;
  spinenet49|spinenet96|spinenet143) EXPERIMENT=evonorm_maskrcnn_spinenet_coco ;;
  *) echo "unknown BACKBONE '${BACKBONE}'; use resnet50fpn, spinenet49, spinenet96 or spinenet143" >&2; exit 2 ;;
esac
CONFIG="official_configs/maskrcnn_${BACKBONE}_${NORM_ACT}_tpu.yaml"
if [[ ! -f "${HERE}/../${CONFIG}" ]]; then
  echo "unknown NORM_ACT '${NORM_ACT}' for ${BACKBONE} (no ${CONFIG}); resnet50fpn: bn_relu, evonorm_b0 or evonorm_s0; spinenet*: evonorm_b0" >&2
  exit 2
fi
: "${DATA_DIR:?set DATA_DIR, e.g. gs://BUCKET/coco}"
export DATA_OVERRIDE="task.train_data.input_path=${DATA_DIR}/train*,task.validation_data.input_path=${DATA_DIR}/val*,task.annotation_file=${DATA_DIR}/instances_val2017.json"
exec "${HERE}/run_on_tpu_vm.sh" --experiment="${EXPERIMENT}" --config_file="${CONFIG}" \
  --model_dir="${MODEL_DIR:?set MODEL_DIR}/maskrcnn_${BACKBONE}_${NORM_ACT}"
