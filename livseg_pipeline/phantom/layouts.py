"""Writers for the native layouts of the public liver datasets and of a SIRT hospital export.

Each writer puts one :class:`PhantomCase` where the real dataset would have it and returns the written
paths (relative to the cohort root) plus layout details for the manifest. Everything is written
atomically: files via temporary names, DICOM folders and zips complete or not at all.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from livseg_pipeline.io.image_io import Image, reorient, write_image
from livseg_pipeline.phantom.dicom_writer import (
    SeriesInfo,
    dataset_bytes,
    iter_ct_slices,
    iter_mask_slices,
    make_uid,
)
from livseg_pipeline.phantom.generator import PhantomCase
from livseg_pipeline.utils.files import atomic_path, save_json

LAYOUTS = ("lits", "msd", "sliver07", "ircadb", "sirt")
LAYOUT_ROOTS = {"lits": "LiTS", "msd": "Task03_Liver", "sliver07": "SLIVER07", "ircadb": "3Dircadb1",
                "sirt": "SIRT"}


def _tumour_label(case: PhantomCase, orientation: str, dtype=np.uint8) -> Image:
    """LiTS/MSD label: 1 liver, 2 tumour (tumour voxels are inside the liver)."""
    lab = case.label.array.astype(np.uint8).copy()
    if case.tumour is not None:
        lab[case.tumour.array > 0] = 2
    return reorient(case.label.with_array(lab.astype(dtype)), orientation)


def write_lits(case: PhantomCase, root: Path, index: int, orientation: str = "RAS",
               image_dtype=np.int16) -> dict:
    """``LiTS/volume-N.nii`` + ``LiTS/segmentation-N.nii`` (uncompressed NIfTI, labels 0/1/2)."""
    base = root / LAYOUT_ROOTS["lits"]
    img = reorient(case.ct, orientation)
    img = img.with_array(img.array.astype(image_dtype))
    vol, seg = base / f"volume-{index}.nii", base / f"segmentation-{index}.nii"
    write_image(_tumour_label(case, orientation), seg, compress=False)
    write_image(img, vol, compress=False)   # image last: its presence marks a finished case
    return {"files": {"image": vol, "label": seg}, "label_values": {"liver": 1, "tumour": 2},
            "native_id": f"volume-{index}", "orientation": orientation, "dtype": np.dtype(image_dtype).name}


def write_msd(case: PhantomCase, root: Path, index: int, orientation: str = "RAS",
              image_dtype=np.int16) -> dict:
    """``Task03_Liver/imagesTr/liver_N.nii.gz`` + ``labelsTr/liver_N.nii.gz`` (0/1/2)."""
    base = root / LAYOUT_ROOTS["msd"]
    img = reorient(case.ct, orientation)
    img = img.with_array(img.array.astype(image_dtype))
    im, lb = base / "imagesTr" / f"liver_{index}.nii.gz", base / "labelsTr" / f"liver_{index}.nii.gz"
    write_image(_tumour_label(case, orientation), lb)
    write_image(img, im)
    return {"files": {"image": im, "label": lb}, "label_values": {"liver": 1, "tumour": 2},
            "native_id": f"liver_{index}", "orientation": orientation, "dtype": np.dtype(image_dtype).name}


def write_msd_dataset_json(root: Path, indices: list[int]) -> Path:
    """MSD-style ``dataset.json`` listing the training cases present."""
    base = root / LAYOUT_ROOTS["msd"]
    d = {
        "name": "Liver", "description": "Liver and tumour segmentation (livseg synthetic phantoms)",
        "reference": "livseg phantom generator", "licence": "CC-BY-SA 4.0", "release": "1.0",
        "tensorImageSize": "3D", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": len(indices), "numTest": 0,
        "training": [{"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
                     for i in sorted(indices)],
        "test": [],
    }
    save_json(d, base / "dataset.json", indent=4)
    return base / "dataset.json"


def write_sliver(case: PhantomCase, root: Path, index: int) -> dict:
    """``SLIVER07/liver-orig0NN.mhd/.raw`` (MET_SHORT) + ``liver-seg0NN.mhd/.raw`` (MET_UCHAR 0/1)."""
    base = root / LAYOUT_ROOTS["sliver07"]
    img, seg = base / f"liver-orig{index:03d}.mhd", base / f"liver-seg{index:03d}.mhd"
    write_image(reorient(case.label, "LPS"), seg, compress=False)
    write_image(reorient(case.ct, "LPS"), img, compress=False)
    return {"files": {"image": img, "label": seg, "image_raw": img.with_suffix(".raw"),
                      "label_raw": seg.with_suffix(".raw")},
            "label_values": {"liver": 1}, "native_id": f"liver-orig{index:03d}", "orientation": "LPS",
            "dtype": "int16"}


def _write_zip(path: Path, members) -> None:
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for name, data in members:
                zf.writestr(name, data)


def write_ircadb(case: PhantomCase, root: Path, index: int, mask_value: int = 255) -> dict:
    """``3Dircadb1/3Dircadb1.N/PATIENT_DICOM.zip`` (``PATIENT_DICOM/image_K``, ``image_0`` most caudal)
    + ``MASKS_DICOM.zip`` (``MASKS_DICOM/liver/image_K`` with values 0/``mask_value``, and a few other
    structures as in the real distribution)."""
    base = root / LAYOUT_ROOTS["ircadb"] / f"3Dircadb1.{index}"
    base.mkdir(parents=True, exist_ok=True)
    pid = f"liver_{index:02d}"

    key = (case.meta.get("seed"), case.meta.get("scan_index"), index)   # UIDs unique per scan

    def info(what: str, number: int) -> SeriesInfo:
        return SeriesInfo(patient_id="", patient_name=f"{pid}^{what}", study_uid=make_uid("ircad", *key, what, "st"),
                          series_uid=make_uid("ircad", *key, what), frame_uid=make_uid("ircad", *key, "for"),
                          study_date="20090527", series_description="", series_number=number, institution="IRCAD")

    masks = {"liver": case.label}
    if case.tumour is not None and case.tumour.array.any():
        masks["livertumor01"] = case.tumour
    members = [(f"MASKS_DICOM/{name}/image_{k}", dataset_bytes(ds))
               for j, (name, m) in enumerate(masks.items())
               for k, ds in iter_mask_slices(m, info(name, 10 + j), mask_value)]
    _write_zip(base / "MASKS_DICOM.zip", members)
    members = [(f"PATIENT_DICOM/image_{k}", dataset_bytes(ds))
               for k, ds in iter_ct_slices(case.ct, info("patient", 1), style="ircad")]
    _write_zip(base / "PATIENT_DICOM.zip", members)
    return {"files": {"image": base / "PATIENT_DICOM.zip", "label": base / "MASKS_DICOM.zip"},
            "label_values": {"liver": int(mask_value)}, "native_id": f"3Dircadb1.{index}",
            "zip_members": {"image": "PATIENT_DICOM", "label": "MASKS_DICOM/liver"},
            "orientation": "LPS", "dtype": "int16"}


def write_sirt(case: PhantomCase, root: Path, patient_id: str, study_date: str, mask_format: str = "nifti",
               series_number: int = 2) -> dict:
    """``SIRT/<PatientID>_<date>/CT/`` (DICOM CT series, RescaleIntercept -1024) and the liver mask as
    ``liver.nii.gz`` (``mask_format='nifti'``), a DICOM RTSTRUCT ``RTSTRUCT_liver.dcm`` with ROI
    ``Liver`` (``'rtstruct'``) or both (``'both'``)."""
    if mask_format not in ("nifti", "rtstruct", "both"):
        raise ValueError(f"sirt mask format must be 'nifti', 'rtstruct' or 'both', got {mask_format!r}")
    base = root / LAYOUT_ROOTS["sirt"] / f"{patient_id}_{study_date}"
    base.mkdir(parents=True, exist_ok=True)
    desc = "ABDOMEN PV 3.0 B30f" if case.meta.get("contrast") == "portal" else "CT LOW DOSE AC 5.0 B31s"
    key = (case.meta.get("seed"), case.meta.get("scan_index"), patient_id, study_date)   # unique per scan
    info = SeriesInfo(patient_id=patient_id, patient_name=f"PHANTOM^{patient_id}",
                      study_uid=make_uid("sirt", *key),
                      series_uid=make_uid("sirt", *key, "ct"),
                      frame_uid=make_uid("sirt", *key, "for"),
                      study_date=study_date, series_description=desc, series_number=series_number)
    ct_dir = base / "CT"
    if ct_dir.exists():
        shutil.rmtree(ct_dir)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".CT.", dir=base))
    try:
        for _, ds in iter_ct_slices(case.ct, info, style="hospital",
                                    slice_thickness=case.meta.get("slice_thickness")):
            (tmp_dir / f"CT.{ds.SOPInstanceUID}.dcm").write_bytes(dataset_bytes(ds))
        os.replace(tmp_dir, ct_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)
    files: dict[str, Path] = {"image": ct_dir}
    # A rerun with another mask format must not leave the other mask behind (two masks = ambiguous).
    for fmt, stale in (("rtstruct", base / "liver.nii.gz"), ("nifti", base / "RTSTRUCT_liver.dcm")):
        if mask_format == fmt and stale.exists():
            stale.unlink()
    if mask_format in ("rtstruct", "both"):
        files["label_rtstruct"] = _write_rtstruct(case, ct_dir, base / "RTSTRUCT_liver.dcm")
    if mask_format in ("nifti", "both"):
        files["label"] = base / "liver.nii.gz"
        write_image(reorient(case.label, "LPS"), files["label"])
    if "label" not in files:
        files["label"] = files["label_rtstruct"]
    return {"files": files, "label_values": {"liver": 1}, "native_id": base.name, "patient_id": patient_id,
            "study_date": study_date, "orientation": "LPS", "dtype": "uint16+intercept",
            "series_uid": info.series_uid, "mask_format": mask_format}


def _write_rtstruct(case: PhantomCase, ct_dir: Path, path: Path) -> Path:
    from rt_utils import RTStructBuilder

    rt = RTStructBuilder.create_new(dicom_series_path=str(ct_dir))
    lps = reorient(case.label, "LPS").array > 0
    # rt-utils wants (rows, cols, slices) with slices sorted along the normal (caudal first).
    rt.add_roi(mask=np.ascontiguousarray(lps.transpose(1, 2, 0)), name="Liver", color=[200, 120, 40])
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # rt-utils prints and uses old pydicom API
        rt.save(str(tmp))
        # rt-utils appends ".dcm" when the name lacks it.
        if not tmp.exists() and Path(str(tmp) + ".dcm").exists():
            os.replace(str(tmp) + ".dcm", tmp)
    return path


def relative_files(info: dict, root: Path) -> dict:
    """The layout record with paths made relative to the cohort root (for the manifest)."""
    out = dict(info)
    out["files"] = {k: Path(os.path.relpath(v, root)).as_posix() for k, v in info["files"].items()}
    return json.loads(json.dumps(out, default=str))
