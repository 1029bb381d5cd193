"""Generator training and inference machinery shared by the generation stages.

- :mod:`reidaug.gen.loop` — the one resumable training loop (checkpoint/resume, step-seeded
  batches, averaged loss log, sample grids, phases) every generator trains with; start here to
  add a generator.
- :mod:`reidaug.gen.common` — device choice, autocast, tensors on the device, and the overlapped
  decode → model → encode pipeline that batched generation runs on.
- :mod:`reidaug.gen.camstyle` — CamStyle: the train images per camera, one CycleGAN (per camera
  pair) or one StarGAN (all cameras) on the loop, and batched translation.
- :mod:`reidaug.gen.poseguided` — PG2 / Deformable GAN: same-identity training pairs, training on
  the loop (PG2 in two phases), and batched generation for any (condition image, target pose) pairs.

The networks and their maths live in ``models/`` (``reidaug.models``); the stages that bind these
to a pipeline are ``stages/train_camstyle.py``, ``stages/train_posegan.py``,
``stages/generate_camstyle.py`` and ``stages/generate_poseguided.py``. They import this package
lazily, inside their functions, so planning a pipeline never imports torch.
"""
