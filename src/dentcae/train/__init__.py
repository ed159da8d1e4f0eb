"""Training: stages (what a config trains, asked of the registries), runfiles (the run folder's
nets, solver, config), loop (the pycaffe training loop, resume, NaN stop), snapshots, losslog."""
