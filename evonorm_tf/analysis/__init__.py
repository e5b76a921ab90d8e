"""Analyses of the models built by this package.

`evonorm_tf.analysis.signal_propagation`: signal propagation plots (per
residual block channel statistics versus depth), also a command:
`python -m evonorm_tf.analysis.signal_propagation --backbone nf_resnet56 --output spp.png`.
"""
