"""dentcae's version (recorded in every bundle's model.json)."""
__version__ = "0.2.0"
