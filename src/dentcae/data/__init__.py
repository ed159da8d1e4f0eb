"""Data: the dataset format (dataset), importers of public formats, the synthetic phantom,
geometry (pixels <-> normalised coordinates), splits, augmentation, and prepare (HDF5 for Caffe)."""
