"""The annotation loop: which X-rays to label first (select); predictions to correct in LabelMe are
written by `dentcae predict --labelme` (deploy/labelme.py) and read back by `dentcae import labelme`."""
