#!/usr/bin/env bash
# Writes ImageNet TFRecords (train-*, validation-*) from class-per-folder image trees.
#
#   TRAIN_DIR=/data/imagenet/train VAL_DIR=/data/imagenet/val OUTPUT_DIR=gs://BUCKET/imagenet-2012-tfrecord \
#     tpu_scripts/prepare_data.sh
#
# Both splits use the sorted folder names of TRAIN_DIR as the label list (labels 1..1000), so
# VAL_DIR must hold the same class folders (e.g. n01440764/...). Shards: 1024 train, 128 validation.
# COCO for Mask R-CNN is a separate command (one call for both splits):
#   python3 tpu_scripts/prepare_coco.py --coco_dir=/data/coco --output_dir=gs://BUCKET/coco
set -euo pipefail
: "${TRAIN_DIR:?}" "${VAL_DIR:?}" "${OUTPUT_DIR:?}"
HERE="$(dirname "$0")"
LABELS="$(mktemp)"
ls -1 "${TRAIN_DIR}" | sort > "${LABELS}"
python3 "${HERE}/prepare_imagenet.py" --image_dir="${TRAIN_DIR}" --output_dir="${OUTPUT_DIR}" \
  --split=train --num_shards="${TRAIN_SHARDS:-1024}" --labels_file="${LABELS}"
python3 "${HERE}/prepare_imagenet.py" --image_dir="${VAL_DIR}" --output_dir="${OUTPUT_DIR}" \
  --split=validation --num_shards="${VAL_SHARDS:-128}" --labels_file="${LABELS}"
