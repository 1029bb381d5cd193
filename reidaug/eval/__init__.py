"""Re-ID evaluation: distances in blocks, CMC and mAP (Market-1501 protocol), re-ranking."""
