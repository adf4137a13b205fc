"""One call per case from ``lvs_predict``: everything a clinician receives besides the NIfTI mask.

:func:`deliver_outputs` writes, into ``out_dir`` and named only from ``case_id``:

==========================  ===========================================  ===========================
file                        what                                         when
==========================  ===========================================  ===========================
``<case>_report.json/.txt`` volume, mass, HU, activity, QC flags         always (``report=True``)
``<case>_rtstruct.dcm``     RTSTRUCT, ROI "Liver"                        ``"rtstruct"`` in types
``<case>_seg.dcm``          DICOM SEG, segment "Liver"                   ``"dicomseg"`` in types
``<case>_overlay.png``      three-view contour overlay                   ``preview=True``
==========================  ===========================================  ===========================

The NIfTI mask itself (``"nifti"``) is written by the predictor. Every file is written atomically.
Inputs are checked before anything is written, so a bad call leaves no partial delivery.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from livseg_pipeline.clinical.dicom_series import load_series, mask_on_series_grid
from livseg_pipeline.clinical.dicomseg import write_dicom_seg
from livseg_pipeline.clinical.overlay import write_overlay_png
from livseg_pipeline.clinical.qc import QCConfig, run_qc
from livseg_pipeline.clinical.report import ReportOptions, build_report, write_report
from livseg_pipeline.clinical.rtstruct import write_rtstruct
from livseg_pipeline.io.image_io import Image, same_grid

OUTPUT_TYPES = ("nifti", "rtstruct", "dicomseg")
_SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def output_paths(out_dir: Path, case_id: str) -> dict[str, Path]:
    """Where :func:`deliver_outputs` writes each product of ``case_id``."""
    out_dir = Path(out_dir)
    return {"report_json": out_dir / f"{case_id}_report.json", "report_txt": out_dir / f"{case_id}_report.txt",
            "rtstruct": out_dir / f"{case_id}_rtstruct.dcm", "dicomseg": out_dir / f"{case_id}_seg.dcm",
            "overlay": out_dir / f"{case_id}_overlay.png"}


def check_output_types(output_types: Sequence[str], dicom_folder: Path | None) -> tuple[str, ...]:
    """Validate ``--output-type`` values; DICOM outputs need the DICOM series they refer to.

    >>> check_output_types(["nifti", "rtstruct"], Path("ct_dicom"))
    ('nifti', 'rtstruct')
    >>> check_output_types(["dicomseg"], None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: output type 'dicomseg' needs a DICOM series as input (it references the CT's UIDs)...
    """
    types = tuple(dict.fromkeys(str(t).lower() for t in output_types))
    unknown = [t for t in types if t not in OUTPUT_TYPES]
    if unknown:
        raise ValueError(f"unknown output type(s) {', '.join(unknown)}; choose from {', '.join(OUTPUT_TYPES)}")
    for t in ("rtstruct", "dicomseg"):
        if t in types and dicom_folder is None:
            raise ValueError(f"output type {t!r} needs a DICOM series as input (it references the CT's UIDs); "
                             "this input is not a DICOM folder")
    return types


def deliver_outputs(ct_image: Image, mask: Image, out_dir: Path, case_id: str, *,
                    output_types: Sequence[str] = ("nifti",), dicom_folder: Path | None = None,
                    series_uid: str | None = None, probabilities: np.ndarray | None = None,
                    member_probabilities: Sequence[np.ndarray] | None = None,
                    removed_components_ml: Sequence[float] = (), preview: bool = False,
                    report_options: ReportOptions | None = None, qc_config: QCConfig | None = None,
                    report: bool = True) -> dict:
    """Write the clinical products of one case (see the module docstring) and return
    ``{"case_id", "paths": {kind: str}, "qc": {"flagged": [...], "flags": [...]}, "report": {...}}``.

    ``mask`` must lie on ``ct_image``'s grid; for DICOM outputs ``ct_image`` is the series in
    ``dicom_folder`` as ``read_image`` returns it (or a reorientation of it). ``probabilities``
    (foreground probability on the same grid) and ``member_probabilities`` (one per ensemble
    member) feed the uncertainty flags; ``removed_components_ml`` are the volumes post-processing
    discarded. Raises ``ValueError`` (one line) on bad input before writing anything.
    """
    if not _SAFE_CASE_ID.match(str(case_id)):
        raise ValueError(f"case id {case_id!r} is not usable as a file name (letters, digits, '.', '_', '-')")
    types = check_output_types(output_types, dicom_folder)
    if not same_grid(ct_image, mask):
        raise ValueError(f"{case_id}: mask grid (shape {mask.array.shape}) differs from the CT grid "
                         f"(shape {ct_image.array.shape}, spacing {ct_image.spacing})")
    out_dir = Path(out_dir)
    paths = output_paths(out_dir, case_id)
    if "rtstruct" in types or "dicomseg" in types:
        # Fail before writing anything when the mask cannot be attached to the series.
        mask_on_series_grid(mask, load_series(dicom_folder, series_uid))
    binary = mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8))
    qc = run_qc(ct_image, binary, probabilities=probabilities, member_probabilities=member_probabilities,
                removed_components_ml=removed_components_ml, config=qc_config)
    rep = build_report(case_id, ct_image, binary, report_options, qc)
    written: dict[str, str] = {}
    if report:
        js, txt = write_report(rep, out_dir, case_id)
        written.update(report_json=str(js), report_txt=str(txt))
    if preview:
        lv = rep["liver"]
        write_overlay_png(ct_image, binary, paths["overlay"], title=f"{case_id}: liver {lv['volume_ml']:.0f} mL",
                          flags=qc["flagged"])
        written["overlay"] = str(paths["overlay"])
    if "rtstruct" in types:
        write_rtstruct(binary, dicom_folder, paths["rtstruct"], series_uid=series_uid)
        written["rtstruct"] = str(paths["rtstruct"])
    if "dicomseg" in types:
        write_dicom_seg(binary, dicom_folder, paths["dicomseg"], series_uid=series_uid)
        written["dicomseg"] = str(paths["dicomseg"])
    summary = {k: rep["liver"][k] for k in ("volume_ml", "mass_g", "mean_hu", "median_hu")}
    for method in ("mird", "bsa"):
        if method in rep.get("activity", {}):
            summary[f"activity_{method}_gbq"] = rep["activity"][method]["activity_gbq"]
    return {"case_id": case_id, "paths": written,
            "qc": {"flagged": qc["flagged"], "n_flagged": qc["n_flagged"], "flags": qc["flags"]},
            "report": summary}
