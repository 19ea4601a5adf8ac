"""LGAFResNet100 on WebFace4M, the LGAF paper's second training set (section 4.1, Tab. 6b).

WebFace4M (4.2M images, 206k identities; 10% of WebFace260M) packed as insightface RecordIO
(`train.rec`, `train.idx`, `property`). Same recipe as configs/lgaf_r100_ms1mv2.py: ArcFace s=64
m=0.4, SGD lr 0.1 x0.1 at epochs 12, 20, 24, AdaFace's batch 512, 26 epochs and augmentations (p=0.2).
The 206k x 512 class-centre matrix (0.4 GB in float32, 0.8 GB with momentum) still fits one device;
PartialFC below 1.0 shards the centres over mirrored replicas (not yet over several workers or on JAX).

    keras-fr train configs/lgaf_r100_webface4m.py --output runs/lgaf_r100_webface4m
"""

DATA = "../data/webface4m"

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
    output="../runs/lgaf_r100_webface4m",
    strategy="mirrored",
    seed=0,
    checkpoint_every_steps=2000,
)
