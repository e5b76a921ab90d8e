#!/usr/bin/env bash
# EfficientNet-B0 / B5 on ImageNet with one norm-act (official_configs/efficientnet_*.yaml).
#
#   MODEL_DIR=gs://BUCKET/runs DATA_DIR=gs://BUCKET/imagenet-2012-tfrecord \
#     tpu_scripts/launch_efficientnet.sh b0 evonorm_s0 [tpu|gpu]
#
# MODEL: b0 or b5 (B5 at batch 2048 needs a v3-32: create the VM with ACCELERATOR_TYPE=v3-32).
# NORM_ACT: bn_silu (baseline; b5 also bn_silu_sync: BN statistics over all cores, see
# official_configs/efficientnet_b5_bn_silu_tpu.yaml), evonorm_b0, evonorm_s0; evonorm_b1/b2/s1/s2 by override of the
# B0 / S0 file. TARGET tpu (default: a detached run on the TPU VM TPU_NAME via run_on_tpu_vm.sh, by
# its ACCELERATOR_TYPE) or gpu (here).
set -euo pipefail
MODEL="${1:?usage: launch_efficientnet.sh MODEL NORM_ACT [tpu|gpu]}"
NORM_ACT="${2:?usage: launch_efficientnet.sh MODEL NORM_ACT [tpu|gpu]}"
TARGET="${3:-tpu}"
HERE="$(dirname "$0")"

case "${MODEL}" in b0|b5) ;; *) echo "unknown MODEL '${MODEL}'; use b0 or b5" >&2; exit 2 ;; esac
case "${NORM_ACT}" in
  bn_silu|evonorm_b0|evonorm_s0) BASE="${NORM_ACT}"; OVERRIDE="" ;;
  bn_silu_sync) [[ "${MODEL}" == b5 && "${TARGET}" == tpu ]] || { echo "bn_silu_sync is a b5 TPU baseline only" >&2; exit 2; }
    BASE=bn_silu_sync; OVERRIDE="" ;;
  evonorm_b1|evonorm_b2) BASE=evonorm_b0; OVERRIDE="task.model.backbone.evonorm_efficientnet.norm_activation.type=${NORM_ACT}" ;;
  evonorm_s1|evonorm_s2) BASE=evonorm_s0; OVERRIDE="task.model.backbone.evonorm_efficientnet.norm_activation.type=${NORM_ACT}" ;;
  *) echo "unknown NORM_ACT '${NORM_ACT}'; use bn_silu, bn_silu_sync (b5) or evonorm_{b0,b1,b2,s0,s1,s2}" >&2; exit 2 ;;
esac

ARGS=(--experiment=evonorm_efficientnet_imagenet
      --config_file="official_configs/efficientnet_${MODEL}_${BASE}_${TARGET}.yaml"
      --model_dir="${MODEL_DIR:?set MODEL_DIR}/efficientnet_${MODEL}_${NORM_ACT}_${TARGET}")
[[ -n "${OVERRIDE}" ]] && ARGS+=(--params_override="${OVERRIDE}")
if [[ "${TARGET}" == gpu ]]; then
  LOCAL=1 TPU="" exec "${HERE}/run_on_tpu_vm.sh" "${ARGS[@]}"
fi
exec "${HERE}/run_on_tpu_vm.sh" "${ARGS[@]}"
