"""What every stage stands on: atomic files and folders, locks, the one `import caffe`
(backend.py), the YAML reader and the job pool. Nothing here knows about landmarks."""
