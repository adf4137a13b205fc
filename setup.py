from setuptools import find_packages, setup

setup(
    name="livseg",
    version="0.1.0",
    description="Self-configuring 3-pathway DeepMedic whole-liver segmentation on CT for SIRT planning",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["livseg_pipeline", "livseg_pipeline.*", "dataset_conversion",
                                    "dataset_conversion.*"]) + ["livseg_pipeline.presets"],
    # The presets live in the top-level plans/ folder (plain JSON a user can read and copy) and are
    # installed as a subpackage so that they are found without a checkout.
    package_dir={"livseg_pipeline.presets": "plans"},
    package_data={"livseg_pipeline.presets": ["*.json"]},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.3",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "pandas>=2.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pydicom>=2.4",
        "rt-utils>=1.2.7",
        "highdicom>=0.22",
        "scikit-image>=0.21",
        "psutil>=5.9",
        "connected-components-3d>=3.12",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout", "ruff", "medpy"]},
    entry_points={
        "console_scripts": [
            "lvs_convert=livseg_pipeline.cli.convert:main",
            "lvs_plan_preprocess=livseg_pipeline.cli.plan_preprocess:main",
            "lvs_train=livseg_pipeline.cli.train:main",
            "lvs_predict=livseg_pipeline.cli.predict:main",
            "lvs_find_best_threshold=livseg_pipeline.cli.find_best_threshold:main",
            "lvs_evaluate=livseg_pipeline.cli.evaluate:main",
            "lvs_demo=livseg_pipeline.cli.demo:main",
            "lvs_make_phantoms=livseg_pipeline.cli.make_phantoms:main",
        ]
    },
)
