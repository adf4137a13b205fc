"""Inference: dense and region-growing segment inference, fold ensembles, the paper's
post-processing, threshold tuning and the ``lvs_predict`` case handling (documentation/inference.md).

Main entry points: :func:`livseg_pipeline.inference.dense.predict_preprocessed` (one preprocessed
volume), :class:`livseg_pipeline.inference.predictor.Predictor` (one CT image in, mask out),
:func:`livseg_pipeline.inference.postprocessing.postprocess` and
:func:`livseg_pipeline.inference.threshold.tune`. Submodules are imported on use, so importing this
package stays cheap.
"""
