"""The io wing, at the bottom of the import order: ``files`` (torch-free) and ``tensors``."""
