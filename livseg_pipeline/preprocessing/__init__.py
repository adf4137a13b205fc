"""The paper's preprocessing (documentation/preprocessing.md).

* ``preprocessor``: one case — ``preprocess_case``, ``restore_to_original``, storage of ``CASE.npz``/``.json``
* ``cropping``: body mask and the whole-abdomen crop
* ``resampling``: grids and physical-space resampling
* ``intensity``: median filter and the HU window mapping
* ``context``: anti-aliased volumes for pathways 2 and 3
* ``dataset``: every case of a raw dataset, in parallel
"""
