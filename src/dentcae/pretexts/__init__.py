"""Unsupervised pre-trainings: one module each, registered in plugins.py. A pre-training builds
the AlexNet net it trains on all non-test images, names its data and draws what it learned; its
conv1-5 (and fc6) then copy into a head (model.init: <its name>)."""
