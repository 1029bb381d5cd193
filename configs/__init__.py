"""Bundled pipeline YAMLs (importable as reidaug.configs so installed copies find them)."""
