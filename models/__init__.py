"""GAN and pose models, one file per family: ``base`` (the GANModel plumbing every GAN shares),
``gan_common`` (losses, init, schedules, image checks), ``cyclegan``, ``stargan``, ``pg2``,
``deformable``; ``pose_estimators`` (+ ``mmcv_shim``) for keypoint extraction."""
