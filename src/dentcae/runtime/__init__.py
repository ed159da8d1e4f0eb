"""What every stage stands on: atomic files and folders, locks, the one `import caffe`
(backend.py), the YAML reader and where a table's jobs run (cluster.py: here, or on Ray). Nothing
here knows about landmarks."""
