"""Decoders whose normalization-activations are chosen by name.

Importing this package registers the Model Garden decoder builder `evonorm_fpn`
(config: `evonorm_tf.configs.maskrcnn.NormActFPN`).
"""

from evonorm_tf.modeling.decoders.fpn import NormActFPN, build_fpn_decoder

__all__ = ["NormActFPN", "build_fpn_decoder"]
