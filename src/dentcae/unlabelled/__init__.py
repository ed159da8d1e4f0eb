"""Unlabelled X-rays put to work: one home for the methods that use the images nobody annotated.

teachers (one run or an ensemble, with test-time views, labels images), filters (which guesses to
trust: confidence, spread across teachers and views, the labelled shapes' model), choose (the
settings and the filters applied), report (the pseudo-labels' accuracy on withheld labels, per
criterion), pseudo_label (`dentcae pseudo-label`: the pseudo-labelled dataset folder).
"""
