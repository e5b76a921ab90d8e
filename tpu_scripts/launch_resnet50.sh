#!/usr/bin/env bash
# ResNet-50 on ImageNet with one norm-act, the paper's setting (official_configs/resnet50_*.yaml).
#
#   MODEL_DIR=gs://BUCKET/runs DATA_DIR=gs://BUCKET/imagenet-2012-tfrecord \
#     tpu_scripts/launch_resnet50.sh evonorm_b0 [tpu|gpu]
#
# NORM_ACT: bn_relu (v1.5 baseline), evonorm_b0, evonorm_s0; evonorm_b1/b2 and evonorm_s1/s2 use
# the B0 / S0 file with a norm_activation.type override. TARGET tpu (default; starts a detached run
# on the TPU VM TPU_NAME via run_on_tpu_vm.sh, by its ACCELERATOR_TYPE) or gpu (here, 8 GPUs, mirrored).
set -euo pipefail
NORM_ACT="${1:?usage: launch_resnet50.sh NORM_ACT [tpu|gpu]}"
TARGET="${2:-tpu}"
HERE="$(dirname "$0")"

case "${NORM_ACT}" in
  bn_relu|evonorm_b0|evonorm_s0) BASE="${NORM_ACT}"; OVERRIDE="" ;;
  evonorm_b1|evonorm_b2) BASE=evonorm_b0; OVERRIDE="task.model.backbone.evonorm_resnet.norm_activation.type=${NORM_ACT}" ;;
  evonorm_s1|evonorm_s2) BASE=evonorm_s0; OVERRIDE="task.model.backbone.evonorm_resnet.norm_activation.type=${NORM_ACT}" ;;
  *) echo "unknown NORM_ACT '${NORM_ACT}'; use bn_relu or evonorm_{b0,b1,b2,s0,s1,s2}" >&2; exit 2 ;;
esac

ARGS=(--experiment=evonorm_resnet_imagenet
      --config_file="official_configs/resnet50_${BASE}_${TARGET}.yaml"
      --model_dir="${MODEL_DIR:?set MODEL_DIR}/resnet50_${NORM_ACT}_${TARGET}")
[[ -n "${OVERRIDE}" ]] && ARGS+=(--params_override="${OVERRIDE}")
if [[ "${TARGET}" == gpu ]]; then
  LOCAL=1 TPU="" exec "${HERE}/run_on_tpu_vm.sh" "${ARGS[@]}"
fi
exec "${HERE}/run_on_tpu_vm.sh" "${ARGS[@]}"
