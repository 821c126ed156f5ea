"""The curvature monitor inside other training loops: optional callbacks for HF transformers and Lightning.

    from landscape.train.integrations.hf import CurvatureCallback            # needs transformers (extra `hf`)
    from landscape.train.integrations.lightning import LightningCurvatureCallback   # needs lightning (extra)

Both measure λmax, eos_ratio and the preconditioned sharpness with `landscape.hessian.CurvatureMonitor` on the
measurement set every `every` optimizer steps and log them under "curvature/..." (docs/methods.md §G.8). Importing
this package imports neither framework.
"""
