#!/usr/bin/env bash
# Creates a Cloud TPU VM and installs this project and its TensorFlow stack on every worker.
#
#   TPU_NAME=evonorm-v3-8 ZONE=europe-west4-a ACCELERATOR_TYPE=v3-8 tpu_scripts/create_tpu_vm.sh
#
# Variables (defaults in brackets):
#   TPU_NAME [evonorm-tpu], ZONE [europe-west4-a], ACCELERATOR_TYPE [v3-8]
#     ResNet-50 runs use v3-8 / v2-8 (8 cores x 128 images); EfficientNet-B5 needs v3-32.
#   RUNTIME_VERSION [tpu-ubuntu2204-base]: a base image; TensorFlow is installed below
#   TF_TPU_PACKAGE [tensorflow-tpu==2.20.0]: must match tf-models-official 2.20 (see setup.py)
#   REPO_URL: where the VMs clone this project from (or copy it with `gcloud ... scp`)
#   PROJECT: gcloud project (default: the gcloud config)
set -euo pipefail

TPU_NAME="${TPU_NAME:-evonorm-tpu}"
ZONE="${ZONE:-europe-west4-a}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v3-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
TF_TPU_PACKAGE="${TF_TPU_PACKAGE:-tensorflow-tpu==2.20.0}"
REPO_URL="${REPO_URL:?set REPO_URL to a git URL of this project}"
PROJECT_FLAG=${PROJECT:+--project=${PROJECT}}

gcloud compute tpus tpu-vm create "${TPU_NAME}" ${PROJECT_FLAG} \
  --zone="${ZONE}" \
  --accelerator-type="${ACCELERATOR_TYPE}" \
  --version="${RUNTIME_VERSION}"

# Every worker of a pod slice runs the same program, so every worker gets the same install.
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" ${PROJECT_FLAG} --zone="${ZONE}" --worker=all --command="
  set -e
  python3 -m pip install --upgrade pip
  python3 -m pip install '${TF_TPU_PACKAGE}' -f https://storage.googleapis.com/libtpu-tf-releases/index.html
  rm -rf evonorm_tf && git clone '${REPO_URL}' evonorm_tf
  python3 -m pip install -e evonorm_tf
  python3 -c 'import tensorflow as tf; print(tf.__version__, tf.config.list_logical_devices(\"TPU\") or \"TPU visible after initialization\")'
"
echo "TPU VM ${TPU_NAME} is ready; launch with tpu_scripts/launch_resnet50.sh or launch_efficientnet.sh"
