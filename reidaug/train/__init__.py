"""Re-ID training on reidaug HDF5 files: backbones, IDE / triplet / BN-neck heads, resumable loop."""
