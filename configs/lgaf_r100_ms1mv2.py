"""LGAFResNet100 on MS1MV2, the LGAF paper's run (section 4.1; keras_fr.training.recipes.LGAF).

MS1MV2 (insightface's `faces_emore`: 5.8M images, 85k identities) as insightface RecordIO with its
`.bin` verification sets. ArcFace s=64 m=0.4 (CosFace: loss type "cosface"), SGD lr 0.1 x0.1 at
epochs 12, 20 and 24, the AdaFace augmentations with probability 0.2. Batch 512, 26 epochs, momentum
0.9 and weight decay 5e-4 are AdaFace's (the LGAF paper does not state them). The global batch of 512
is split over all local devices (mirrored); for several hosts use --strategy multiworker and TF_CONFIG
(docs/training_at_scale.md).

    keras-fr train configs/lgaf_r100_ms1mv2.py --output runs/lgaf_r100_ms1mv2
"""

DATA = "../data/faces_emore"

config = dict(
    model="lgaf_resnet100",
    data={"type": "recordio", "path": DATA},
    recipe="lgaf",
    recipe_args={"probability": 0.2},
    batch_size=512,
    epochs=26,
    precision="mixed_float16",
    loss={"type": "arcface", "scale": 64.0, "margin": 0.4},
    partial_fc=1.0,
    evaluation=[f"{DATA}/lfw.bin", f"{DATA}/cfp_fp.bin", f"{DATA}/agedb_30.bin"],
    output="../runs/lgaf_r100_ms1mv2",
    strategy="mirrored",
    seed=0,
    checkpoint_every_steps=2000,
)
