#!/usr/bin/env bash
# Creates a Cloud TPU VM, installs this project with a TPU build of TensorFlow, and checks that
# TensorFlow lists the TPU (the last step exits non-zero when it does not).
#
#   TPU_NAME=evonorm-v3-8 ZONE=europe-west4-a ACCELERATOR_TYPE=v3-8 REPO_URL=https://... \
#     tpu_scripts/create_tpu_vm.sh
#
# Variables (defaults in brackets):
#   TPU_NAME [evonorm-tpu], ZONE [europe-west4-a], ACCELERATOR_TYPE [v3-8], PROJECT [gcloud config]
#     ResNet-50 and EfficientNet-B0 use a v3-8; EfficientNet-B5 and Mask R-CNN a v3-32.
#   RUNTIME_VERSION: the VM image.
#     Single-host slices [tpu-ubuntu2204-base]: install_on_tpu_vm.sh installs tensorflow-tpu 2.20.0
#       from PyPI without letting any requirement replace it.
#     Pod slices [required]: a TensorFlow pod image (tpu-vm-tf-<version>-pod-pjrt, listed by
#       `gcloud compute tpus tpu-vm versions list --zone=ZONE`) of TensorFlow 2.20: its TPU worker
#       service runs on every host, and worker 0 drives them all (run_on_tpu_vm.sh).
#   REPO_URL: where the VM clones this project from.
#   DRY_RUN=1: print the gcloud commands instead of running them.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tpu_scripts/tpu_vm.sh
source "${HERE}/tpu_vm.sh"

TPU_NAME="${TPU_NAME:-evonorm-tpu}"
ZONE="${ZONE:-europe-west4-a}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v3-8}"
REPO_URL="${REPO_URL:?set REPO_URL to a git URL of this project}"
GCLOUD_FLAGS=(--zone="${ZONE}")
[[ -n "${PROJECT:-}" ]] && GCLOUD_FLAGS+=(--project="${PROJECT}")
HOSTS="$(tpu_hosts "${ACCELERATOR_TYPE}")" || exit 2

if [[ "${HOSTS}" == 1 ]]; then
  RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
  INSTALL="tpu_scripts/install_on_tpu_vm.sh"
  CHECK=""
else
  if [[ "${RUNTIME_VERSION:-}" != tpu-vm-tf-*pod* ]]; then
    echo "create_tpu_vm.sh: ${ACCELERATOR_TYPE} has ${HOSTS} hosts and needs a TensorFlow pod image" \
         "(RUNTIME_VERSION=tpu-vm-tf-<2.20 version>-pod-pjrt); received RUNTIME_VERSION='${RUNTIME_VERSION:-}'" >&2
    exit 2
  fi
  INSTALL="CHECK=0 tpu_scripts/install_on_tpu_vm.sh"
  CHECK="cd evonorm_tf && TPU_LOAD_LIBRARY=0 python3 tpu_scripts/check_tpu.py --tpu=${TPU_NAME}"
fi

COMMANDS=()
printf -v CREATE '%q ' gcloud compute tpus tpu-vm create "${TPU_NAME}" "${GCLOUD_FLAGS[@]}" \
  --accelerator-type="${ACCELERATOR_TYPE}" --version="${RUNTIME_VERSION}"
COMMANDS+=("${CREATE% }")
# Only worker 0 runs Python (single host: the only worker; pod: the one that drives the others).
SETUP="set -e; rm -rf evonorm_tf && git clone ${REPO_URL} evonorm_tf && cd evonorm_tf && ${INSTALL}"
COMMANDS+=("$(ssh_command "${TPU_NAME}" "${GCLOUD_FLAGS[@]}" --worker=0 -- "${SETUP}")")
if [[ -n "${CHECK}" ]]; then
  COMMANDS+=("$(ssh_command "${TPU_NAME}" "${GCLOUD_FLAGS[@]}" --worker=0 -- "${CHECK}")")
fi

echo "# ${ACCELERATOR_TYPE}: ${HOSTS} host(s), image ${RUNTIME_VERSION}"
for command in "${COMMANDS[@]}"; do
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "${command}"
  else
    eval "${command}"
  fi
done
[[ "${DRY_RUN:-0}" == 1 ]] || echo "TPU VM ${TPU_NAME} is ready; launch with tpu_scripts/launch_*.sh (see docs/tpu.md)"
