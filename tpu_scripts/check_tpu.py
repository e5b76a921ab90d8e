"""Checks that TensorFlow on this machine reaches a TPU: exits 1 with one line when it does not.

    python3 tpu_scripts/check_tpu.py                    # single-host slice (TPU_NAME unset: local)
    TPU_LOAD_LIBRARY=0 python3 tpu_scripts/check_tpu.py --tpu=evonorm-v3-32   # pod slice, worker 0

It initialises the TPU system the way Model Garden's `distribute_utils` does
for `--tpu` (connecting to the cluster first for a TPU name), then lists the
logical TPU devices. On success it prints one line: the TensorFlow version and
the number and kind of TPU cores. When TensorFlow is the plain (CPU/GPU) build,
when the TPU is held by another process, or when no TPU is attached, it prints
one line naming what failed on stderr and exits with status 1.
"""

import argparse
import os
import sys


def tpu_devices(tpu):
    """Initialises the TPU system named `tpu` ("local" or "": this host) and lists its TPU devices."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    if tpu not in ("", "local"):
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.config.list_logical_devices("TPU")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tpu", default=os.environ.get("TPU_NAME", "local"),
                        help="'local' (a TPU VM's own chips; default unless TPU_NAME is set) or the TPU's name")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf

        devices = tpu_devices(args.tpu)
    except Exception as error:  # noqa: BLE001  (any failure means: no TPU reached)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"check_tpu.py: no TPU reached with --tpu={args.tpu}: {type(error).__name__}: {first_line}",
              file=sys.stderr)
        return 1
    if not devices:
        print(f"check_tpu.py: TensorFlow {tf.__version__} lists no TPU device with --tpu={args.tpu}",
              file=sys.stderr)
        return 1
    kinds = sorted({device.device_type for device in devices})
    print(f"TensorFlow {tf.__version__}: {len(devices)} {'/'.join(kinds)} cores with --tpu={args.tpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
