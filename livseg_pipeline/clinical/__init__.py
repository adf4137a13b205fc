"""Clinical delivery: RTSTRUCT and DICOM SEG for adjustment in MIM / 3D Slicer, the liver report with
SIRT activity, QC flags and overlay PNGs. ``lvs_predict`` calls :func:`deliver_outputs` per case.

See documentation/clinical_workflow.md.
"""

from livseg_pipeline.clinical.activity import SirtConstants, bsa_activity, mird_activity_gbq
from livseg_pipeline.clinical.deliver import OUTPUT_TYPES, deliver_outputs
from livseg_pipeline.clinical.dicomseg import read_dicom_seg_mask, write_dicom_seg
from livseg_pipeline.clinical.qc import QCConfig, run_qc
from livseg_pipeline.clinical.report import ReportOptions
from livseg_pipeline.clinical.rtstruct import (
    list_rtstruct_rois,
    read_rtstruct,
    read_rtstruct_mask,
    rtstruct_to_mask_file,
    write_rtstruct,
)

__all__ = ["OUTPUT_TYPES", "QCConfig", "ReportOptions", "SirtConstants", "bsa_activity", "deliver_outputs",
           "list_rtstruct_rois", "mird_activity_gbq", "read_dicom_seg_mask", "read_rtstruct", "read_rtstruct_mask",
           "rtstruct_to_mask_file", "run_qc",
           "write_dicom_seg", "write_rtstruct"]
