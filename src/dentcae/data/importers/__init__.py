"""Turn public annotation formats into dentcae's one dataset format (data/README.md).

    import_isbi2015("ISBI2015/", "data/isbi", spacing=0.1, annotator="senior")
    import_labelme("labelme/", "data/mine", landmarks=["sella", "nasion"], spacing=0.1)

Both write the dataset folder atomically (a temporary folder renamed when complete), link images
instead of copying them where the file system allows, and refuse a non-empty output folder unless
`overwrite`.
"""
from .isbi2015 import import_isbi2015
from .labelme import import_labelme

__all__ = ["import_isbi2015", "import_labelme"]
