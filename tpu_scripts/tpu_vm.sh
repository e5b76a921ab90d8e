#!/usr/bin/env bash
# Shell functions of the TPU VM scripts (sourced by create_tpu_vm.sh and run_on_tpu_vm.sh).
#
#   source tpu_scripts/tpu_vm.sh
#   tpu_hosts v3-32                                   # prints 4
#   ssh_command NAME --zone=Z --worker=0 -- 'cd evonorm_tf && ...'   # prints the gcloud command
#
# tpu_hosts: the number of hosts (TPU VM workers) of an accelerator type.
# The number after the dash counts TensorCores (v2, v3, v4, v5p) or chips (v5litepod, v6e); every
# generation puts at most 8 of them on one host, so a type up to 8 is a single-host slice and a
# larger one has N / 8 hosts (v5litepod and v6e slices above 8 chips have 4 chips per host: N / 4).

tpu_hosts() {
  local type="$1" generation count
  if [[ ! "${type}" =~ ^(v2|v3|v4|v5p|v5litepod|v6e)-([0-9]+)$ ]]; then
    echo "unknown ACCELERATOR_TYPE '${type}'; expected e.g. v2-8, v3-8, v3-32, v4-8, v5p-8, v5litepod-8, v6e-8" >&2
    return 2
  fi
  generation="${BASH_REMATCH[1]}"
  count="${BASH_REMATCH[2]}"
  if ! (( (count <= 8 && (count & (count - 1)) == 0 && count > 0) || (count > 8 && count % 8 == 0) )); then
    echo "unknown ACCELERATOR_TYPE '${type}': slices have 1, 2, 4, 8 or a multiple of 8 cores or chips" >&2
    return 2
  fi
  if (( count <= 8 )); then
    echo 1
  elif [[ "${generation}" == v5litepod || "${generation}" == v6e ]]; then
    echo $(( count / 4 ))
  else
    echo $(( count / 8 ))
  fi
}

# Prints `gcloud compute tpus tpu-vm ssh NAME FLAGS... --command='REMOTE'` as one shell-ready line:
# what DRY_RUN=1 shows is what eval runs.
ssh_command() {
  local flags=() remote
  while [[ "$1" != -- ]]; do flags+=("$1"); shift; done
  remote="$2"
  if [[ "${remote}" == *"'"* ]]; then
    printf '%q ' gcloud compute tpus tpu-vm ssh "${flags[@]}" --command="${remote}"
  else
    printf '%s' "$(printf '%q ' gcloud compute tpus tpu-vm ssh "${flags[@]}")--command='${remote}'"
  fi
  echo
}
