"""MSConvResNet50 on MS1MV3, the MSConv paper's run (section 4.1-4.2; keras_fr.training.recipes.MSCONV).

MS1MV3 (insightface's `ms1m-retinaface-t1`: 5.2M images, 93k identities) as insightface RecordIO
(`train.rec`, `train.idx`, `property`; read without mxnet) and the insightface `.bin` verification
sets beside it. Batch 128, SGD lr 0.02 (momentum 0.9, coupled weight decay 5e-4) with cosine decay
per step to 5e-6 over 20 epochs, horizontal flip, ArcFace s=64 m=0.5, mixed precision; the paper
trained on one RTX 4090, hence strategy "none". On more devices keep the global batch_size at 128 for
the paper's schedule, or raise it (the learning rates scale linearly with it).

    keras-fr train configs/msconv_r50_ms1mv3.py --output runs/msconv_r50_ms1mv3
"""

DATA = "../data/ms1m-retinaface-t1"

config = dict(
    model="msconv_resnet50",
    data={"type": "recordio", "path": DATA},
    recipe="msconv",
    batch_size=128,
    epochs=20,
    precision="mixed_float16",
    loss={"type": "arcface", "scale": 64.0, "margin": 0.5},
    partial_fc=1.0,
    evaluation=[f"{DATA}/lfw.bin", f"{DATA}/cfp_fp.bin", f"{DATA}/agedb_30.bin"],
    output="../runs/msconv_r50_ms1mv3",
    strategy="none",
    seed=0,
    checkpoint_every_steps=2000,
)
