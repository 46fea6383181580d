"""Algebra shared by the MLP-editing methods."""
