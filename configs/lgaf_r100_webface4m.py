"""LGAFResNet100 on WebFace4M, the LGAF paper's second training set (section 4.1, Tab. 6b).

WebFace4M (4.2M images, 206k identities; 10% of WebFace260M) packed as insightface RecordIO
(`train.rec`, `train.idx`, `property`). Same recipe as configs/lgaf_r100_ms1mv2.py: ArcFace s=64
m=0.4, SGD lr 0.1 x0.1 at epochs 12, 20, 24, AdaFace's batch 512, 26 epochs and augmentations (p=0.2).
The 206k x 512 class-centre matrix (0.4 GB in float32, 0.8 GB with momentum) still fits one device;
PartialFC below 1.0 shards the centres over mirrored replicas (not yet over several workers or on JAX).

    keras-fr train configs/lgaf_r100_webface4m.py --output runs/lgaf_r100_webface4m
"""

import os
import runpy

DATA = "../data/webface4m"

# The MS1MV2 run's recipe, loss, batch, schedule and precision; only the data and the output differ.
_MS1MV2 = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lgaf_r100_ms1mv2.py"))

config = dict(
    _MS1MV2["config"],
    data={"type": "recordio", "path": DATA},
    evaluation=[f"{DATA}/lfw.bin", f"{DATA}/cfp_fp.bin", f"{DATA}/agedb_30.bin"],
    output="../runs/lgaf_r100_webface4m",
)
