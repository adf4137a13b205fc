"""A small phantom dataset in the real data tree, for tests, benchmarks and smoke runs of lvs_train.

Phantoms (:func:`livseg_pipeline.phantom.generator.generate_phantom`) are written as a raw nnU-Net
dataset (``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz``, ``dataset.json``, a simple
``splits_final.json``) and preprocessed with :func:`~livseg_pipeline.preprocessing.preprocessor.preprocess_case`,
exactly what lvs_convert + lvs_plan_preprocess would produce for them.
"""

from __future__ import annotations

from pathlib import Path

from livseg_pipeline.experiment_planning.plans import Plans, save_plans
from livseg_pipeline.io.image_io import Image, write_image
from livseg_pipeline.paths import preprocessed_root, raw_root
from livseg_pipeline.utils.files import save_json


def make_phantom_dataset(dataset: str, plans: Plans, n_cases: int = 6, size_scale: float = 0.3,
                         n_folds: int = 3, seed: int = 0) -> Path:
    """Write ``n_cases`` phantoms under ``$LVS_RAW/dataset`` and preprocess them into
    ``$LVS_PREPROCESSED/dataset/<plans_name>``; returns that plans folder."""
    from livseg_pipeline.phantom.generator import generate_phantom
    from livseg_pipeline.preprocessing.preprocessor import preprocess_case, save_preprocessed_case

    raw = raw_root() / dataset
    folder = preprocessed_root() / dataset / plans.plans_name
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"phantom_{i:03d}" for i in range(n_cases)]
    for i, case in enumerate(ids):
        ph = generate_phantom(seed + i, size_scale=size_scale, contrast="portal")
        img_path, lab_path = raw / "imagesTr" / f"{case}_0000.nii.gz", raw / "labelsTr" / f"{case}.nii.gz"
        write_image(ph.ct, img_path)
        write_image(ph.label, lab_path)
        arrays, props = preprocess_case(Image(ph.ct.array, ph.ct.geometry, str(img_path)),
                                        Image(ph.label.array, ph.label.geometry, str(lab_path)), plans)
        save_preprocessed_case(folder, case, arrays, props)
    save_json({"name": dataset, "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
               "numTraining": n_cases, "file_ending": ".nii.gz",
               "cases": {c: {"source": "phantom", "group_id": c} for c in ids}}, raw / "dataset.json")
    k = max(1, min(n_folds, n_cases))
    splits = [{"train": [c for j, c in enumerate(ids) if j % k != f], "val": ids[f::k]} for f in range(k)]
    save_json(splits, raw / "splits_final.json")
    save_plans(plans, folder / "plans.json")
    return folder


def tiny_plans(base: str = "cpu_demo", spacing_mm: float = 8.0, plans_name: str = "tiny") -> Plans:
    """``base`` shrunk for seconds-long CPU runs: coarse voxels, 4-8 features, short epochs.

    >>> p = tiny_plans()
    >>> p.network.pathway_features[0], p.training.batch_size, p.preprocessing.target_spacing_mm
    ([4, 4, 6, 6, 6, 6, 8, 8, 8, 8], 8, [8.0, 8.0, 8.0])
    """
    from livseg_pipeline.experiment_planning.plans import load_preset

    p = load_preset(base)
    p.plans_name = plans_name
    p.preprocessing.target_spacing_mm = [spacing_mm] * 3
    p.network.pathway_features = [[4, 4, 6, 6, 6, 6, 8, 8, 8, 8] for _ in p.network.pathway_factors]
    p.network.fc_features = [16, 16]
    p.network.fc_dropout = 0.0
    t = p.training
    t.batch_size, t.iterations_per_epoch, t.epochs, t.val_interval_epochs, t.num_workers = 8, 12, 4, 2, 0
    t.optimizer.lr, t.optimizer.lr_decay_every_epochs = 0.05, 4
    p.inference.segment_size_out = 45
    # cpu_demo trains without augmentation, with boundary-centred segments and poly decay; tests of the
    # training loop keep the paper's augmentation, liver/background split and step decay
    paper = load_preset("paper").training
    p.training.augmentation = paper.augmentation
    t.foreground_ratio, t.boundary_ratio = paper.foreground_ratio, paper.boundary_ratio
    t.optimizer.lr_schedule = paper.optimizer.lr_schedule
    return p.validate()
