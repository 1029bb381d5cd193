"""CamStyle: a CycleGAN per camera pair against one multi-domain StarGAN, same data (issue 5).

One pipeline, run once with ``reidaug run`` (a subprocess), holds both model families side by
side on the same synthetic data (``demo-data``: every person rendered under every camera style,
so each fake has a true image):

    demo-data (num_cams 3) -> ingest -+-> train-cyclegan (3 models: c0-c1, c0-c2, c1-c2) -> gen-cyclegan
                                      |     -> labels-cyclegan (lsr) -> export-cyclegan -> score-cyclegan
                                      +-> train-stargan  (1 model for c0, c1, c2)        -> gen-stargan
                                            -> labels-stargan (lsr)  -> export-stargan  -> score-stargan

Both ``train-camstyle`` instances get the same image size, widths (ngf/ndf), residual blocks and
iterations *per model*, as the issue asks: so the StarGAN takes a third of the CycleGANs' total
steps. A third arm (``stargan-matched``, same stages with that suffix; ``--no-matched`` leaves it
out) trains the StarGAN for the CycleGANs' total steps (L(L-1)/2 x the iterations), to separate
"one model" from "a third of the training". The chunks run one at a time (``workers: 1``), so
each model's seconds are its own.

Collected per family (``bench/results/camstyle_models.json``, and a markdown table):
- models trained, training seconds (the sum of the per-model ``seconds`` in train-camstyle's
  ``meta.json`` summary; the stage's wall time beside it), generator and discriminator
  parameters (built from the saved config), generate-camstyle's fakes/s;
- from score-fakes' ``metrics.json`` (OSNet x0.25 MSMT17 judge): identity rank-1 / mAP of the
  fakes as queries against all real train images (own origin excluded) beside the origins as
  queries; FReID per target camera beside the untransferred origins; SSIM vs the renderer's true
  image beside the untransferred origin's;
- bench-side extras on the same exported file: SSIM per target camera, and a
  *resolution-matched* baseline (the origin resized to the generator size and back, as a fake
  is, then SSIM vs truth): the fakes are made at the generator size and upsampled by the export,
  so this says how much of the SSIM gap is resolution alone.
Sample grids: each model's ``train/<model>/samples/final.png`` and ``reidaug inspect --grid`` of
each export (``NAME.png`` and ``NAME_fakes.png``) are copied / written to ``<workspace>/grids``.

On a busy CPU, torch's default intra-op threads (one per core) can be an order of magnitude
slower than one thread (measured here: 0.25 s vs 3.1 s per CycleGAN step with 2 threads while
two other jobs held both cores), so the pipeline subprocess runs with ``--threads`` (default 1:
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``). ``--probe STEPS`` times that many training steps per
family at the chosen settings (random images: the speed does not depend on them) and prints the
projected training time, without running the pipeline.

    nice -n 15 .venv/bin/python bench/camstyle_models.py --probe 20
    nice -n 15 .venv/bin/python bench/camstyle_models.py --workspace /work/runs/camstyle_models --iterations 600
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, SHARED, cpu_model, load_average, machine, now_utc, write_result

DEFAULT_JUDGE = SHARED / "models" / "osnet_x0_25_msmt17.onnx"
DEFAULT_WORKSPACE = ROOT.parent / "runs" / "camstyle_models"
FAMILIES = ("cyclegan", "stargan")


def arms(args: argparse.Namespace) -> dict[str, tuple[str, int]]:
    """Arm name -> (model, iterations per model): the issue's two (same iterations per model),
    plus, unless ``--no-matched``, a StarGAN given the CycleGANs' total steps (L(L-1)/2 x)."""
    out = {fam: (fam, args.iterations) for fam in FAMILIES}
    if args.matched:
        pairs = args.num_cams * (args.num_cams - 1) // 2
        out["stargan-matched"] = ("stargan", args.iterations * pairs)
    return out


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------
def pipeline_yaml(args: argparse.Namespace) -> str:
    train = (f"{{model: MODEL, image_height: {args.height}, image_width: {args.width}, ngf: {args.ngf}, "
             f"ndf: {args.ndf}, n_blocks: {args.n_blocks}, iterations: ITER, seed: {args.seed},\n"
             f"               checkpoint_every: {args.checkpoint_every}, sample_every: ITER, log_every: 25}}")
    head = textwrap.dedent(f"""\
        # Written by bench/camstyle_models.py: per-pair CycleGAN vs one StarGAN on the same data (issue 5).
        name: camstyle-models
        description: CamStyle per-camera-pair CycleGAN vs one multi-domain StarGAN, same synthetic data
        execution: {{scheduler: threads, workers: 1}}
        stages:
          demo-data:
            params: {{num_ids: {args.num_ids}, num_cams: {args.num_cams}, images_per_id_per_cam: {args.per_cam},
                     height: {args.data_height}, width: {args.data_width}, seed: {args.seed}}}
          ingest:
            params: {{format: market1501, chunk_size: 64}}
            inputs: {{source: demo-data.dataset}}
        """)
    body = ""
    for fam, (model, iterations) in arms(args).items():
        body += textwrap.indent(textwrap.dedent(f"""\
            train-{fam}:
              uses: train-camstyle
              params: {train.replace("MODEL", model).replace("ITER", str(iterations))}
            gen-{fam}:
              uses: generate-camstyle
              params: {{batch_size: 32}}
              inputs: {{dataset: ingest.dataset, models: train-{fam}.models}}
            labels-{fam}:
              uses: assign-labels
              params: {{schemes: {{real: onehot, camstyle: lsr}}, epsilon: 0.1}}
              inputs: {{camstyle: gen-{fam}.fakes}}
            export-{fam}:
              uses: export-hdf5
              params: {{encoding: raw, image_height: {args.data_height}, image_width: {args.data_width}}}
              inputs: {{camstyle: gen-{fam}.fakes, labels: labels-{fam}.labels}}
            score-{fam}:
              uses: score-fakes
              params: {{judge: {args.judge}}}
              inputs: {{hdf5: export-{fam}.hdf5, synthetic: demo-data.dataset}}
            """), "  ")
    return head + body


def run_cli(cmd: list[str], threads: int, log_path: Path) -> tuple[int, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    return rc, time.perf_counter() - t0


def stage_entries(yaml_path: Path, workspace: Path) -> dict[str, Path]:
    """Each stage instance's committed cache entry (the graph's keys, as `reidaug status` finds them)."""
    from reidaug.pipeline.cache import Cache
    from reidaug.pipeline.config import load_pipeline
    from reidaug.pipeline.graph import build_graph
    from reidaug.stages import STAGES

    graph = build_graph(load_pipeline(yaml_path), STAGES)
    cache = Cache(workspace)
    out = {}
    for name, node in graph.nodes.items():
        if cache.state(node.spec.name, graph.keys[name]).status != "cached":
            raise SystemExit(f"stage {name} has no finished cache entry in {workspace}; see the run log")
        out[name] = cache.entry_dir(node.spec.name, graph.keys[name])
    return out


# --------------------------------------------------------------------------------------------
# What each family gives
# --------------------------------------------------------------------------------------------
def count_params(models_dir: Path, iterations: int) -> dict[str, Any]:
    """Generator parameters of the saved files, and the discriminators their config implies."""
    from reidaug.gen.camstyle import CamStyleTranslator, ModelJob, TrainSettings, build_model
    from reidaug.io.checkpoint import load_torch

    per_model = {}
    for f in sorted(models_dir.glob("*.pt")):
        state = load_torch(f, "bench")
        gens = CamStyleTranslator._build(state)
        cfg = state["config"]
        hp = {"image_height": cfg["image_height"], "image_width": cfg["image_width"]}
        if state["model"] == "cyclegan":
            hp.update(ngf=cfg["ngf"], ndf=cfg["ndf"], n_blocks=cfg["n_blocks"], d_layers=cfg["n_layers_d"],
                      lambda_cycle=cfg["lambda_cycle"], lambda_identity=cfg["lambda_identity"], lr=cfg["lr"],
                      pool_size=cfg["pool_size"])
        else:
            hp.update(ngf=cfg["g_conv_dim"], ndf=cfg["d_conv_dim"], n_blocks=cfg["g_repeat_num"],
                      d_layers=cfg["d_repeat_num"], lambda_cycle=cfg["lambda_rec"], lambda_identity=0.0,
                      lr=cfg["lr_g"] * 2, pool_size=0)
        full = build_model(ModelJob(state["model"], tuple(state["cameras"])), hp, TrainSettings(iterations=iterations))
        d_params = sum(p.numel() for k, net in full.nets.items() if k.startswith("D") for p in net.parameters())
        per_model[f.stem] = {"generator_params": sum(p.numel() for net in gens.values() for p in net.parameters()),
                             "generators": sorted(gens), "discriminator_params": int(d_params),
                             "file_bytes": f.stat().st_size}
    return {"per_model": per_model,
            "generator_params": sum(m["generator_params"] for m in per_model.values()),
            "discriminator_params": sum(m["discriminator_params"] for m in per_model.values())}


def ssim_extras(h5_path: Path, synthetic_root: Path, gen_hw: tuple[int, int]) -> dict[str, Any]:
    """SSIM vs truth per target camera: fakes, untransferred origins, and origins taken through
    the generator's size and back (what resolution alone costs)."""
    import cv2
    import numpy as np

    from reidaug.eval.generation import read_generated_h5, ssim

    d = read_generated_h5(h5_path, synthetic_root=synthetic_root)
    gh, gw = gen_hw
    rows: dict[int, dict[str, list[float]]] = {}
    for i, gt in enumerate(d.gt_images or []):
        o = int(d.fake_origins[i])
        if gt is None or o < 0:
            continue
        fake, real = d.fake_images[i], d.real_images[o]
        h, w = fake.shape[:2]
        gt = gt if gt.shape[:2] == (h, w) else cv2.resize(gt, (w, h), interpolation=cv2.INTER_AREA)
        real = real if real.shape[:2] == (h, w) else cv2.resize(real, (w, h), interpolation=cv2.INTER_AREA)
        # generate-camstyle: INTER_LINEAR down to the model size; export-hdf5: INTER_LINEAR back up
        small = cv2.resize(real, (gw, gh), interpolation=cv2.INTER_LINEAR)
        round_trip = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        r = rows.setdefault(int(d.fake_target_camids[i]), {"fakes": [], "origin": [], "origin_resized": []})
        r["fakes"].append(ssim(fake, gt))
        r["origin"].append(ssim(real, gt))
        r["origin_resized"].append(ssim(round_trip, gt))
    per_cam = {str(c): {k: round(float(np.mean(v)), 4) for k, v in r.items()} | {"n": len(r["fakes"])}
               for c, r in sorted(rows.items())}
    allv = {k: [x for r in rows.values() for x in r[k]] for k in ("fakes", "origin", "origin_resized")}
    return {"per_target_camera": per_cam,
            "all": {k: round(float(np.mean(v)), 4) for k, v in allv.items()} | {"n": len(allv["fakes"])},
            "what": "bench-side, same SSIM as score-fakes; origin_resized = origin -> generator size -> "
                    "export size (INTER_LINEAR both ways), the resolution-matched baseline"}


def output(entry: Path, name: str) -> Path:
    """A stage output's path in its cache entry (as meta.json names it)."""
    return entry / json.loads((entry / "meta.json").read_text())["outputs"][name]


def collect_family(fam: str, entries: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    def meta(name: str) -> dict[str, Any]:
        return json.loads((entries[name] / "meta.json").read_text())

    train, gen = meta(f"train-{fam}"), meta(f"gen-{fam}")
    models = train["summary"]["models"]
    metrics = json.loads(output(entries[f"score-{fam}"], "metrics").read_text())
    ident = metrics["identity"]
    ssim = metrics.get("ssim") or {}
    return {
        "models_trained": len(models),
        "models": [{k: m[k] for k in ("name", "cameras", "steps", "seconds", "images_per_s", "last_losses")}
                   for m in models],
        "train_seconds_sum_of_models": round(sum(m["seconds"] for m in models), 1),
        "train_stage_timings": train.get("timings"),
        "total_steps": sum(m["steps"] for m in models),
        "params": count_params(output(entries[f"train-{fam}"], "models"), args.iterations),
        "generate": {k: gen["summary"].get(k)
                     for k in ("num_fakes", "per_target_camera", "images_per_s", "model_busy")},
        "generate_stage_timings": gen.get("timings"),
        "identity": {"fakes": ident["fakes"], "baseline": ident["baseline"], "protocol": ident["protocol"]},
        "freid": metrics["freid"],
        "ssim": {"fakes": (ssim.get("fakes") or {}).get("mean"), "baseline": (ssim.get("baseline") or {}).get("mean"),
                 "n": (ssim.get("fakes") or {}).get("n")},
        "ssim_extras": ssim_extras(output(entries[f"export-{fam}"], "hdf5"), output(entries["demo-data"], "dataset"),
                                   (args.height, args.width)),
        "counts": metrics["counts"],
        "judge": metrics["judge"],
        "entries": {k: str(v) for k, v in entries.items() if k.split("-", 1)[-1] == fam},
    }


def make_grids(entries: dict[str, Path], out_dir: Path, reidaug: str, names: list[str]) -> dict[str, list[str]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for fam in names:
        files = []
        for final in sorted(output(entries[f"train-{fam}"], "train").glob("*/samples/final.png")):
            dst = out_dir / f"train_{fam}_{final.parent.parent.name}.png"
            shutil.copyfile(final, dst)
            files.append(str(dst))
        png = out_dir / f"export_{fam}.png"
        subprocess.run([reidaug, "inspect", str(output(entries[f"export-{fam}"], "hdf5")), "--grid", str(png)],
                       check=True, capture_output=True)
        files += [str(png), str(png.with_name(png.stem + "_fakes.png"))]
        made[fam] = files
    return made


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def _f(v: Any, d: int = 3) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def table(fams: dict[str, dict[str, Any]]) -> str:
    cams = sorted({c for r in fams.values() for c in r["freid"]}, key=int)
    head = (["family", "models", "train s (sum of models)", "steps", "G params", "D params", "fakes/s",
             "id rank-1 fake / base", "id mAP fake / base"]
            + [f"FReID c{c} fake / base" for c in cams]
            + ["SSIM fake / base / base@gen-size"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for fam, r in fams.items():
        i, b = r["identity"]["fakes"], r["identity"]["baseline"]
        x = r["ssim_extras"]["all"]
        row = [fam, str(r["models_trained"]), f"{r['train_seconds_sum_of_models']:.0f}", str(r["total_steps"]),
               f"{r['params']['generator_params']:,}", f"{r['params']['discriminator_params']:,}",
               _f(r["generate"]["images_per_s"], 1),
               f"{_f(i['rank1'])} / {_f(b['rank1'])}", f"{_f(i['mAP'])} / {_f(b['mAP'])}"]
        row += [f"{_f(r['freid'][c]['fd'], 1)} / {_f(r['freid'][c]['fd_baseline'], 1)}" if c in r["freid"] else "-"
                for c in cams]
        row.append(f"{_f(r['ssim']['fakes'])} / {_f(r['ssim']['baseline'])} / {_f(x['origin_resized'])}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "SSIM per target camera (fake / untransferred origin / origin at generator size and back):", "",
              "| family | " + " | ".join(f"to c{c}" for c in cams) + " |", "|---|" + "---|" * len(cams)]
    for fam, r in fams.items():
        pc = r["ssim_extras"]["per_target_camera"]
        lines.append(f"| {fam} | " + " | ".join(
            f"{_f(pc[c]['fakes'])} / {_f(pc[c]['origin'])} / {_f(pc[c]['origin_resized'])}" if c in pc else "-"
            for c in cams) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Probe: how long does a step take here, now?
# --------------------------------------------------------------------------------------------
def probe(args: argparse.Namespace) -> None:
    import tempfile

    import numpy as np
    import torch

    from reidaug.gen.camstyle import ModelJob, TrainSettings, load_size, plan_jobs, train_model
    from reidaug.gen.common import pick_device

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lh, lw = load_size(args.height, args.width, 1.12)
    cams = tuple(range(args.num_cams))
    images = {c: rng.integers(0, 255, (32, lh, lw, 3), dtype=np.uint8) for c in cams}
    hp = dict(image_height=args.height, image_width=args.width, ngf=args.ngf, ndf=args.ndf, n_blocks=args.n_blocks,
              d_layers=None, lambda_cycle=10.0, lambda_identity=0.5, lr=2e-4, pool_size=50)
    settings = TrainSettings(iterations=args.probe, checkpoint_every=10**6, sample_every=10**6, log_every=10**6)
    total = 0.0
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    for fam in FAMILIES:
        job = ModelJob(fam, cams[:2] if fam == "cyclegan" else cams)
        with tempfile.TemporaryDirectory() as tmp:
            out = train_model(job, images, hp, settings, Path(tmp) / "run", Path(tmp) / "g.pt",
                              pick_device("cpu", "probe"))
        per_step = out.seconds / args.probe
        n_models = len(plan_jobs(fam, cams))
        total += per_step * args.iterations * n_models
        print(f"{fam}: {1000 * per_step:.0f} ms/step (incl. one sample grid + checkpoint); {n_models} model(s) x "
              f"{args.iterations} steps ~ {per_step * args.iterations * n_models / 60:.1f} min")
        if fam == "stargan" and args.matched:
            extra = per_step * args.iterations * (len(plan_jobs("cyclegan", cams)) - 1)
            total += extra
            print(f"stargan-matched: {len(plan_jobs('cyclegan', cams))} x {args.iterations} steps ~ "
                  f"{(extra + per_step * args.iterations) / 60:.1f} min")
    print(f"projected training, all arms: {total / 60:.1f} min; load average {os.getloadavg()}")


# --------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE, help="pipeline workspace (outside the repo)")
    ap.add_argument("--out", type=Path, default=RESULTS / "camstyle_models.json")
    ap.add_argument("--judge", type=Path, default=DEFAULT_JUDGE)
    # integer options: (flag, default, help)
    for flag, default, text in (
            ("--num-ids", 24, None), ("--num-cams", 3, None), ("--per-cam", 4, "images per identity per camera"),
            ("--data-height", 128, None), ("--data-width", 64, None),
            ("--height", 64, "generator training size"), ("--width", 32, None),
            ("--ngf", 16, None), ("--ndf", 32, None), ("--n-blocks", 3, None),
            ("--iterations", 600, "training steps per model (both families)"), ("--checkpoint-every", 250, None),
            ("--seed", 0, None), ("--threads", 1, "torch intra-op threads of the pipeline (OMP_NUM_THREADS)"),
            ("--nice", 15, "raise this process's niceness to at least this")):
        ap.add_argument(flag, type=int, default=default, help=text)
    ap.add_argument("--no-matched", dest="matched", action="store_false",
                    help="leave out the StarGAN trained for the CycleGANs' total steps")
    ap.add_argument("--probe", type=int, default=0, metavar="STEPS", help="only time STEPS steps per family")
    args = ap.parse_args()
    args.judge = args.judge.resolve()
    if os.nice(0) < args.nice:
        os.nice(args.nice - os.nice(0))  # the pipeline subprocess inherits it
    if args.probe:
        probe(args)
        return
    if not args.judge.is_file():
        raise SystemExit(f"judge model {args.judge} not found; pass --judge PATH (an ONNX re-ID model)")

    ws = args.workspace.resolve()
    ws.mkdir(parents=True, exist_ok=True)
    yaml_path = ws / "camstyle_models.yaml"
    yaml_path.write_text(pipeline_yaml(args))
    reidaug = str(Path(sys.executable).with_name("reidaug"))
    cmd = [reidaug, "run", str(yaml_path), "-w", str(ws / "workspace")]
    started = now_utc()
    load_before = load_average()
    print(f"running: OMP_NUM_THREADS={args.threads} {shlex.join(cmd)}  (niceness {os.nice(0)}; log: {ws / 'run.log'})",
          flush=True)
    rc, wall = run_cli(cmd, args.threads, ws / "run.log")
    load_after = load_average()
    if rc != 0:
        print((ws / "run.log").read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"reidaug run failed (exit {rc}); log: {ws / 'run.log'}")

    entries = stage_entries(yaml_path, ws / "workspace")
    fams = {fam: collect_family(fam, entries, args) for fam in arms(args)}
    grids = make_grids(entries, ws / "grids", reidaug, list(fams))
    import torch

    write_result(args.out, {
        "benchmark": "camstyle_models",
        "issue": "5: one multi-domain StarGAN vs a CycleGAN per camera pair, same data",
        "date": started,
        "command": "nice -n 15 python bench/camstyle_models.py " + shlex.join(sys.argv[1:]),
        "pipeline_command": f"OMP_NUM_THREADS={args.threads} MKL_NUM_THREADS={args.threads} {shlex.join(cmd)}",
        "pipeline_yaml": pipeline_yaml(args),
        "machine": machine(
            cpu=cpu_model(), torch=torch.__version__, cuda=torch.cuda.is_available(), niceness=os.nice(0),
            torch_threads_in_pipeline=args.threads, load_average_before=load_before, load_average_after=load_after,
            note="shared 2-core machine: a CycleGAN training and a re-ID ablation ran at the same time (higher "
                 "priority); this bench ran under nice 15, so its seconds are not a clean-machine speed"),
        "settings": {k: getattr(args, k) for k in ("num_ids", "num_cams", "per_cam", "data_height", "data_width",
                                                    "height", "width", "ngf", "ndf", "n_blocks", "iterations", "seed")}
                    | {"arms": {k: {"model": m, "iterations_per_model": it} for k, (m, it) in arms(args).items()}}
                    | {"train_batch": 1, "lr": "2e-4 (CycleGAN); StarGAN: 1e-4 for G and D (the stage halves lr)",
                       "labels": "real one-hot, fakes LSR eps 0.1",
                       "export": f"raw {args.data_height}x{args.data_width}"},
        "caveat": "smoke-level: a few hundred steps per model at 64x32 on 144 training images; shows costs "
                  "(models, parameters, seconds, fakes/s) and whether anything moved, not which family is better "
                  "when trained to convergence",
        "pipeline_wall_s": round(wall, 1),
        "pipeline_log": [ln for ln in (ws / "run.log").read_text().splitlines() if ln.startswith("Stage '")],
        "families": fams,
        "grids": grids,
    })
    print(table(fams))
    print(f"\npipeline wall {wall:.0f} s; load average {load_before} -> {load_after}; grids: {ws / 'grids'}; "
          f"results: {args.out}")


if __name__ == "__main__":
    main()
