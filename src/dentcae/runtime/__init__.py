"""What every stage stands on: atomic files and folders, locks, where an output may go
(outputs.py: never on, in or around an input), the one `import caffe` (backend.py), the YAML
reader and where a table's jobs run (cluster.py: here, or on Ray). Nothing here knows about
landmarks."""
