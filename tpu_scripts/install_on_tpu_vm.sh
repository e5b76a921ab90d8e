#!/usr/bin/env bash
# Installs this project on a Cloud TPU VM without replacing the TPU build of TensorFlow, then checks it.
# Run from the project's root on the VM (create_tpu_vm.sh does, on the workers that run Python):
#
#   tpu_scripts/install_on_tpu_vm.sh
#
# Two cases, chosen by what the image already has:
# - A TensorFlow TPU VM image (runtime version tpu-vm-tf-*): its `tensorflow` distribution is the TPU
#   build. The install is constrained to the installed TensorFlow version (a constraints file written
#   from `pip freeze`), so pip either keeps it or stops with a conflict; it never installs another
#   TensorFlow. The project needs 2.20 (tf-models-official 2.20).
# - A base image (tpu-ubuntu2204-base): TensorFlow comes from PyPI as `tensorflow-tpu==TF_VERSION`
#   together with tpu_scripts/tensorflow_tpu_alias, a file-less distribution named `tensorflow`
#   that requires `tensorflow-tpu`: every `tensorflow` requirement (setup.py, tf-models-official,
#   tf-keras, tensorflow-text) is met by it, so the plain wheel, which does not see TPUs, is never
#   installed. /lib/libtpu.so is linked to the libtpu wheel's library for the PJRT environment
#   (TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so) that run_on_tpu_vm.sh uses.
# Then `tpu_scripts/check_tpu.py` (CHECK=0 skips it, e.g. on pod workers, where only worker 0 checks
# the whole slice) exits non-zero unless TensorFlow lists TPU devices.
#
# Variables: TF_VERSION [2.20.0], LIBTPU_INDEX [the TensorFlow TPU release index], CHECK [1],
# PIP [python3 -m pip], DRY_RUN=1 (print the commands instead of running them).
set -euo pipefail
cd "$(dirname "$0")/.."
TF_VERSION="${TF_VERSION:-2.20.0}"
LIBTPU_INDEX="${LIBTPU_INDEX:-https://storage.googleapis.com/libtpu-tf-releases/index.html}"
read -r -a PIP <<< "${PIP:-python3 -m pip}"

run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
  else
    "$@"
  fi
}

IMAGE_TF="$(python3 -c 'import importlib.metadata as m; print(m.version("tensorflow"))' 2>/dev/null || true)"
if [[ -n "${IMAGE_TF}" && -z "$(python3 -c 'import importlib.metadata as m; print(m.version("tensorflow-tpu"))' 2>/dev/null || true)" ]]; then
  # TensorFlow TPU VM image: pin what is there.
  CONSTRAINTS="$(mktemp)"
  "${PIP[@]}" freeze | grep -iE '^(tensorflow|libtpu[a-z-]*)==' > "${CONSTRAINTS}" || true
  echo "TensorFlow ${IMAGE_TF} from the image; constraints: $(tr '\n' ' ' < "${CONSTRAINTS}")"
  run "${PIP[@]}" install --constraint "${CONSTRAINTS}" -e .
else
  run "${PIP[@]}" install "tensorflow-tpu==${TF_VERSION}" ./tpu_scripts/tensorflow_tpu_alias -e . -f "${LIBTPU_INDEX}"
  if [[ ! -e /lib/libtpu.so ]]; then
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
      LIBTPU='$(python3 -c "import libtpu; print(libtpu.get_library_path())")'
    else
      LIBTPU="$(python3 -c 'import libtpu; print(libtpu.get_library_path())')"
    fi
    run sudo ln -s "${LIBTPU}" /lib/libtpu.so
  fi
fi
if [[ "${CHECK:-1}" == 1 ]]; then
  run env NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so \
    python3 tpu_scripts/check_tpu.py --tpu=local
fi
