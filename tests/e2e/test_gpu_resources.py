"""GPU work on a dask cluster goes to GPU workers only, tested without a GPU: a cluster of two in-process
workers, one declaring ``GPU=1`` (a CPU underneath) and one declaring nothing. With CUDA pretended on the
planning side (the keys say ``cuda-fp32``, as they would on a GPU machine), every chunk of a stage that
computes on the GPU runs on the GPU worker, the CPU stages may run anywhere, and the outputs are the bytes
of the same run on local threads. And the local schedulers never run more torch threads than cores."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reidaug.pipeline.config import load_pipeline
from reidaug.pipeline.graph import build_graph
from reidaug.pipeline.runner import RunOptions, chunk_resources, concurrent_chunks, run_pipeline
from reidaug.stages import STAGES

PIPE = """\
name: gpu-res
stages:
  demo-data: {params: {num_ids: 6, images_per_id_per_cam: 2, height: 64, width: 32}}
  ingest: {params: {format: market1501, chunk_size: 6}, inputs: {source: demo-data.dataset}}
  train-dcgan:
    params: {image_height: 32, image_width: 16, nz: 8, ngf: 4, ndf: 4, iterations: 4, train_batch: 4,
             checkpoint_every: 2, sample_every: 4, log_every: 2, threads: 1, device: auto}
  generate-unconditional: {params: {num_images: 12, chunk_size: 3, seed: 1, batch_size: 3, threads: 1, device: auto}}
  assign-labels:
    inputs: {unconditional: generate-unconditional.fakes}
  export-hdf5:
    params: {image_height: 64, image_width: 32}
    inputs: {unconditional: generate-unconditional.fakes, labels: assign-labels.labels}
"""
GPU_STAGES = ("train-dcgan", "generate-unconditional")


def output_bytes(ws: Path) -> dict[str, bytes]:
    """Every chunk file and the exported HDF5, by stage and name (keys differ only if numerics did)."""
    out = {}
    for stage in ("ingest", "generate-unconditional", "assign-labels"):
        for p in sorted((ws / "cache" / stage).glob("*/*/chunks/*.h5")):
            out[f"{stage}/{p.name}"] = p.read_bytes()
    (h5,) = (ws / "cache" / "export-hdf5").glob("*/*/dataset.h5")
    out["export"] = h5.read_bytes()
    return out


@pytest.fixture
def pretend_cuda(monkeypatch):
    """The planner believes in CUDA (device auto -> a cuda-fp32 key), the chunks still compute on the CPU."""
    import reidaug.pipeline.stage as stage_mod

    monkeypatch.setattr(stage_mod, "cuda_present", lambda: True)


def test_gpu_stages_run_only_on_gpu_workers_and_give_the_threaded_bytes(tmp_path, pretend_cuda):
    pytest.importorskip("distributed")
    from distributed import Client, Scheduler, SpecCluster, Worker, get_task_stream

    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(PIPE))
    graph = build_graph(load_pipeline(path), STAGES)
    run_pipeline(graph, tmp_path / "threads", options=RunOptions(scheduler="threads", workers=2))

    cluster = SpecCluster(
        scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
        workers={"gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
                 "cpu": {"cls": Worker, "options": {"nthreads": 1}}},
        asynchronous=False, silence_logs=50)
    try:
        with Client(cluster) as client:
            gpu_addr = next(a for a, w in client.scheduler_info()["workers"].items() if w.get("resources"))
            with get_task_stream(client) as ts:
                report = run_pipeline(graph, tmp_path / "cluster",
                                      options=RunOptions(scheduler=cluster.scheduler_address))
            assert report.ran("generate-unconditional") == [0, 1, 2, 3]
            ran_on: dict[str, set[str]] = {}
            for task in ts.data:
                stage = next((s for s in STAGES if str(task["key"]).startswith(f"{s}-")), None)
                if stage:
                    ran_on.setdefault(stage, set()).add(task["worker"])
    finally:
        cluster.close()
    for stage in GPU_STAGES:
        assert ran_on[stage] == {gpu_addr}, (stage, ran_on)
    assert "ingest" in ran_on  # CPU stages are not pinned to a worker (any of the two may take them)
    assert output_bytes(tmp_path / "threads") == output_bytes(tmp_path / "cluster")


def test_a_cluster_without_gpu_workers_says_how_to_start_one(tmp_path, pretend_cuda):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from reidaug.errors import ReidAugError

    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(PIPE))
    graph = build_graph(load_pipeline(path), STAGES)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(ReidAugError, match=r"train-dcgan needs a worker with resource GPU=1.*--resources GPU=1"):
            run_pipeline(graph, tmp_path / "ws", options=RunOptions(scheduler=cluster.scheduler_address))


def test_resources_follow_the_numerics_of_the_key():
    from reidaug.pipeline.context import StageContext

    spec = STAGES["generate-unconditional"]

    def ctx(numerics, **params):
        return StageContext(stage="g", spec_name=spec.name, key="0" * 64, params=spec.params(**params),
                            inputs={}, work_dir=Path("."), base_dir=Path("."), num_chunks=1, numerics=numerics)

    assert chunk_resources(spec, ctx(None, device="cpu")) == {}
    assert chunk_resources(spec, ctx(None, device="auto")) == {}  # planned without CUDA: CPU work
    assert chunk_resources(spec, ctx("cuda-fp32", device="auto")) == {"GPU": 1}
    assert chunk_resources(spec, ctx("cpu-bf16", device="cpu", cpu_bf16=True)) == {}
    assert chunk_resources(STAGES["demo-data"], ctx_of("demo-data")) == {}


def ctx_of(name: str):
    from reidaug.pipeline.context import StageContext

    spec = STAGES[name]
    return StageContext(stage=name, spec_name=name, key="0" * 64, params=spec.params(), inputs={},
                        work_dir=Path("."), base_dir=Path("."), num_chunks=1)


def test_local_chunks_at_once_keep_torch_threads_within_the_cores(monkeypatch):
    import reidaug.pipeline.runner as runner

    from reidaug.pipeline.context import StageContext

    spec = STAGES["generate-unconditional"]

    def ctx(threads, numerics=None):
        return StageContext(stage="g", spec_name=spec.name, key="0" * 64, params=spec.params(threads=threads),
                            inputs={}, work_dir=Path("."), base_dir=Path("."), num_chunks=4, numerics=numerics)

    monkeypatch.setattr(runner, "usable_cores", lambda: 2)
    assert concurrent_chunks(2, ctx(2)) == 1  # 2 chunks x 2 threads on 2 cores: one at a time
    assert concurrent_chunks(2, ctx(1)) == 2
    assert concurrent_chunks(4, ctx(4)) == 1  # never below one
    assert concurrent_chunks(2, ctx(2, "cuda-bf16")) == 2  # on the GPU the CPU threads are not the limit
    assert concurrent_chunks(2, ctx(2, "cpu-bf16")) == 1  # bf16 on the CPU still runs on its threads
    assert concurrent_chunks(2, ctx_of("demo-data")) == 2  # no torch threads: every worker
    monkeypatch.setattr(runner, "usable_cores", lambda: 16)
    assert concurrent_chunks(4, ctx(2)) == 4


def test_extract_pose_caps_only_the_torch_backend(monkeypatch):
    """mmpose runs torch in extract-pose: 2 chunks x 2 threads would oversubscribe 2 cores; MoveNet and
    MediaPipe run one thread per chunk and keep every worker."""
    import reidaug.pipeline.runner as runner

    from reidaug.pipeline.context import StageContext

    spec = STAGES["extract-pose"]

    def ctx(**params):
        return StageContext(stage="p", spec_name=spec.name, key="0" * 64, params=spec.params(**params), inputs={},
                            work_dir=Path("."), base_dir=Path("."), num_chunks=4)

    monkeypatch.setattr(runner, "usable_cores", lambda: 2)
    mmpose = {"backend": "mmpose", "config": "rtmpose-t", "random_init": True}
    assert concurrent_chunks(2, ctx(**mmpose)) == 1
    assert concurrent_chunks(2, ctx(**mmpose, threads=1)) == 2
    assert concurrent_chunks(2, ctx(**mmpose, device="cuda")) == 2
    assert concurrent_chunks(2, ctx(backend="mediapipe")) == 2
    # threads at its default stays out of the key (extract-pose keys made before the param are kept)
    assert "threads" not in spec.semantic_params(spec.params(**mmpose))
    assert spec.semantic_params(spec.params(**mmpose, threads=1))["threads"] == 1
