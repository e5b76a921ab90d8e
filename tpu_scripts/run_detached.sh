#!/usr/bin/env bash
# Runs a training command detached from the terminal, with its log in the command's --model_dir.
#
#   tpu_scripts/run_detached.sh python3 tpu_scripts/train.py ... --model_dir=gs://BUCKET/run ...
#
# The command runs in a new session (setsid, nohup), so closing or losing the SSH connection that
# started it does not stop it. Its output is appended to MODEL_DIR/train.log: directly for a local
# MODEL_DIR; for gs://... to a local copy that `gcloud storage cp` uploads every LOG_COPY_SECONDS
# [300] and when the command ends. A second start for the same MODEL_DIR while the first runs exits
# with status 1; once it has ended, the same command resumes (train.py restores the newest
# checkpoint in MODEL_DIR). State (pid, local log): RUN_STATE_DIR [~/.evonorm_runs]/<MODEL_DIR>.
set -euo pipefail

FOREGROUND=0
if [[ "${1:-}" == --foreground ]]; then
  FOREGROUND=1
  shift
fi
MODEL_DIR=""
for arg in "$@"; do
  [[ "${arg}" == --model_dir=* ]] && MODEL_DIR="${arg#--model_dir=}"
done
if [[ -z "${MODEL_DIR}" ]]; then
  echo "run_detached.sh: the command needs a --model_dir=... argument; received: $*" >&2
  exit 2
fi
STATE="${RUN_STATE_DIR:-${HOME}/.evonorm_runs}/$(printf '%s' "${MODEL_DIR}" | tr -c 'A-Za-z0-9._-' '_')"
if [[ "${MODEL_DIR}" == gs://* ]]; then
  LOG="${STATE}/train.log"
else
  LOG="${MODEL_DIR}/train.log"
fi

copy_log() {
  if [[ "${MODEL_DIR}" == gs://* ]]; then
    gcloud storage cp --quiet "${LOG}" "${MODEL_DIR}/train.log" >/dev/null 2>&1 || true
  fi
}

if [[ ${FOREGROUND} == 1 ]]; then
  # The detached part: run the command, upload its log while it runs and once it has ended.
  if [[ "${MODEL_DIR}" == gs://* ]]; then
    ( while sleep "${LOG_COPY_SECONDS:-300}"; do copy_log; done ) &
    COPIER=$!
  fi
  echo "=== $(date -u '+%Y-%m-%dT%H:%M:%SZ') start: $*" >> "${LOG}"
  status=0
  "$@" >> "${LOG}" 2>&1 || status=$?
  echo "=== $(date -u '+%Y-%m-%dT%H:%M:%SZ') exit status ${status}" >> "${LOG}"
  [[ -n "${COPIER:-}" ]] && kill "${COPIER}" 2>/dev/null
  copy_log
  rm -f "${STATE}/pid"
  exit "${status}"
fi

mkdir -p "${STATE}"
[[ "${MODEL_DIR}" == gs://* ]] || mkdir -p "${MODEL_DIR}"
if [[ -f "${STATE}/pid" ]] && kill -0 "$(cat "${STATE}/pid")" 2>/dev/null; then
  echo "run_detached.sh: a run for ${MODEL_DIR} is already running (pid $(cat "${STATE}/pid")); log: ${LOG}" >&2
  exit 1
fi
nohup setsid "$0" --foreground "$@" > /dev/null 2>&1 < /dev/null &
echo $! > "${STATE}/pid"
echo "started pid $! in the background; log: ${LOG}$([[ "${MODEL_DIR}" == gs://* ]] && echo " (uploaded to ${MODEL_DIR}/train.log)")"
