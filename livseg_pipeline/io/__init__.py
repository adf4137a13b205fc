from livseg_pipeline.io.image_io import (  # noqa: F401
    DicomSeries,
    Geometry,
    Image,
    ImageReadError,
    list_dicom_series,
    read_image,
    reorient,
    reorient_to_canonical,
    same_grid,
    write_image,
)
