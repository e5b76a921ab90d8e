"""Analyses of the models built by this package.

`evonorm_tf.analysis.signal_propagation`: signal propagation plots (per
residual block channel statistics versus depth), also a command:
`python -m evonorm_tf.analysis.signal_propagation --backbone nf_resnet56 --output spp.png`.

`evonorm_tf.analysis.mixpath_supernet`: MixPath's Shadow BN claim on the
digits (summed vs single-path features, supernet ranking with Shadow BN vs
one shared BN), also a command; `evonorm_tf.analysis.mixpath_report` holds
its summary, plot and merging of runs.
"""
