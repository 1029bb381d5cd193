"""Generator training and inference machinery shared by the generation stages.

- :mod:`reidaug.gen.common` — device choice, atomic checkpoints, the JSON loss log, a
  deterministic weight checksum, sample-grid drawing, and the overlapped
  decode → model → encode pipeline that batched generation runs on.
- :mod:`reidaug.gen.camstyle` — CamStyle: the train images per camera, training one CycleGAN
  (per camera pair) or one StarGAN (all cameras) with resume, and batched translation.
- :mod:`reidaug.gen.poseguided` — PG2 / Deformable GAN: same-identity training pairs, training
  with resume, and batched generation for any (condition image, target pose) pairs.

Stage modules (``stages/train_camstyle.py``, ``stages/generate_camstyle.py``) import these
lazily, inside their functions, so planning a pipeline never imports torch.
"""
