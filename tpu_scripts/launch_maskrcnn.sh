#!/usr/bin/env bash
# Mask R-CNN ResNet-50-FPN on COCO with one norm-act (official_configs/maskrcnn_resnet50fpn_*_tpu.yaml).
#
#   MODEL_DIR=gs://BUCKET/runs DATA_DIR=gs://BUCKET/coco ACCELERATOR_TYPE=v3-32 \
#     tpu_scripts/launch_maskrcnn.sh evonorm_b0
#
# NORM_ACT: bn_relu (v1.5 backbone, sync BN), evonorm_b0, evonorm_s0 (v2 backbone). DATA_DIR holds
# what tpu_scripts/prepare_coco.py writes: train-*, val-* TFRecords and instances_val2017.json.
# Starts a detached run on the TPU VM TPU_NAME via run_on_tpu_vm.sh (a v3-32 pod slice: worker 0 drives
# all 4 hosts with --tpu=TPU_NAME); the configs expect 32 cores.
set -euo pipefail
NORM_ACT="${1:?usage: launch_maskrcnn.sh NORM_ACT}"
HERE="$(dirname "$0")"
case "${NORM_ACT}" in
  bn_relu|evonorm_b0|evonorm_s0) ;;
  *) echo "unknown NORM_ACT '${NORM_ACT}'; use bn_relu, evonorm_b0 or evonorm_s0" >&2; exit 2 ;;
esac
: "${DATA_DIR:?set DATA_DIR, e.g. gs://BUCKET/coco}"
export DATA_OVERRIDE="task.train_data.input_path=${DATA_DIR}/train*,task.validation_data.input_path=${DATA_DIR}/val*,task.annotation_file=${DATA_DIR}/instances_val2017.json"
exec "${HERE}/run_on_tpu_vm.sh" --experiment=evonorm_maskrcnn_resnetfpn_coco \
  --config_file="official_configs/maskrcnn_resnet50fpn_${NORM_ACT}_tpu.yaml" \
  --model_dir="${MODEL_DIR:?set MODEL_DIR}/maskrcnn_resnet50fpn_${NORM_ACT}"
