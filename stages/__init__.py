"""The stage registry: every stage kind a pipeline YAML may name, listed explicitly.

Stage modules keep their top-level imports light (no torch, no mmpose): planning a fully
cached pipeline imports every module here, and that must stay fast.
"""
from __future__ import annotations

from reidaug.errors import unknown_name
from reidaug.pipeline.stage import StageSpec
from reidaug.stages import (assign_labels, cluster_poses, demo_data, evaluate_posefusion, export_hdf5, extract_pose,
                            filter_fakes, generate_camstyle, generate_colortransfer, generate_dgnet,
                            generate_poseguided, generate_unconditional, ingest, score_dgnet, score_fakes,
                            score_posegan, selftest, train_camstyle, train_dcgan, train_dgnet, train_posegan,
                            train_reid)

STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        demo_data.SPEC,
        ingest.SPEC,
        extract_pose.SPEC,
        cluster_poses.SPEC,
        train_camstyle.SPEC,
        generate_camstyle.SPEC,
        generate_colortransfer.SPEC,
        filter_fakes.SPEC,
        train_posegan.SPEC,
        generate_poseguided.SPEC,
        train_dcgan.SPEC,
        generate_unconditional.SPEC,
        train_dgnet.SPEC,
        generate_dgnet.SPEC,
        score_dgnet.SPEC,
        assign_labels.SPEC,
        export_hdf5.SPEC,
        score_fakes.SPEC,
        score_posegan.SPEC,
        train_reid.SPEC,
        evaluate_posefusion.SPEC,
        selftest.SOURCE,
        selftest.MAP,
        selftest.REDUCE,
    )
}


def get_stage(name: str) -> StageSpec:
    try:
        return STAGES[name]
    except KeyError:
        raise unknown_name("stage", name, STAGES) from None
