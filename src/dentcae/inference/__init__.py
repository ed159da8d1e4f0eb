"""Inference: the one way dentcae turns trained nets into landmarks (evaluate, predict, the
confidence calibration and pseudo-labelling all call detector.Detector)."""
