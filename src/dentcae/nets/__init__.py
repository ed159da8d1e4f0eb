"""Caffe nets and what touches their weights: alexnet (NetSpec building blocks with BVLC names),
solver (SolverParameter from a config), transfer (copy layers by name), infer (run a deploy net)."""
