"""Pose tools: keypoint representations for generators, OpenPose-18 interop, canonical poses."""
