"""``lvs_convert SOURCE INPUT -d ID``: convert a dataset's native layout into livseg's raw layout."""

from __future__ import annotations

import argparse
import os
import sys

from dataset_conversion import CONVERTERS, ConversionError, run_conversion
from dataset_conversion.base import DUPLICATE_POLICIES

_SOURCES = {
    "lits": "LiTS17: volume-N.nii + segmentation-N.nii (1 liver, 2 tumour)",
    "msd": "MSD Task03_Liver: imagesTr/liver_N.nii.gz + labelsTr/",
    "sliver07": "SLIVER07: liver-orig0NN.mhd + liver-seg0NN.mhd",
    "ircadb": "3D-IRCADb-01: 3Dircadb1.N/PATIENT_DICOM(.zip) + MASKS_DICOM(.zip)/liver",
    "sirt": "hospital export: one folder per patient, DICOM CT + liver NIfTI/NRRD or RTSTRUCT",
    "nifti": "generic: imagesTr/CASE_0000.nii.gz + labelsTr/CASE.nii.gz",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvs_convert",
        description="Convert a liver CT dataset from its native layout into $LVS_RAW/DatasetNNN_Name\n"
                    "(imagesTr, labelsTr, dataset.json), then refresh fingerprint.json, duplicates.json and\n"
                    "splits_final.json over the whole dataset. Call it once per source to build one dataset;\n"
                    "reruns convert only new or changed cases. Inputs are never modified.\n"
                    "Exit status: 0 all converted, 1 some case skipped (see the summary), 2 nothing done.",
        epilog="sources:\n" + "\n".join(f"  {k:<9} {v}" for k, v in _SOURCES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=sorted(CONVERTERS), help="layout of INPUT")
    p.add_argument("input", help="folder holding the source's native layout")
    p.add_argument("-d", "--dataset-id", type=int, required=True, help="dataset id NNN (0-999)")
    p.add_argument("--name", default=None, help="dataset name for a new dataset (default: Liver)")
    p.add_argument("-np", "--num-processes", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                   help="worker processes (default: %(default)s)")
    p.add_argument("--duplicates", choices=DUPLICATE_POLICIES, default="group",
                   help="group: keep copies, weight 1/k, one fold (default); drop: keep one copy; "
                        "keep: copies count as independent scans")
    p.add_argument("--overwrite-splits", action="store_true",
                   help="rebuild splits_final.json even if it exists (it may hold your edits)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run_conversion(CONVERTERS[args.source](), args.input, args.dataset_id, name=args.name,
                                num_processes=max(1, args.num_processes), duplicates=args.duplicates,
                                overwrite_splits=args.overwrite_splits)
    except ConversionError as e:
        print(f"lvs_convert: {e}", file=sys.stderr)
        return 2
    return 1 if report["n_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
