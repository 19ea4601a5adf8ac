"""A small run that finishes on a CPU in minutes: the 240 `train` identities of ../shared/data/celeba299.

A 4-stage IResNet with one block per stage at 32x32 pixels (4.9M parameters, headless: the 512-d
average-pooled features are the embedding), the MSConv recipe (SGD momentum 0.9, coupled weight decay
5e-4, cosine decay, horizontal flip) without the linear lr scaling, and a softer ArcFace (s=32,
m=0.2) than the papers' s=64, m=0.5, which a 4-epoch run from scratch does not converge with.
The identity-disjoint test pairs are measured at the end of the last epoch (`celeba_accuracy` in
log.csv). Relative paths are relative to this file's folder.

    keras-fr train configs/celeba299_small.py --output runs/celeba_small
    keras-fr train configs/celeba299_small.py --output runs/celeba_mirrored --strategy mirrored
"""

EPOCHS = 4
DATA = "../../shared/data/celeba299"


def tiny_iresnet():
    from keras_fr.applications import IResNet

    return IResNet((1, 1, 1, 1), "iresnet_tiny", include_top=False, pooling="avg", input_shape=(32, 32, 3))


config = dict(
    model=tiny_iresnet,
    data={"type": "folder", "path": f"{DATA}/images", "split_csv": f"{DATA}/split.csv", "split": "train"},
    recipe="msconv",
    recipe_args={"scale_lr": False},
    epochs=EPOCHS,
    batch_size=64,
    precision="float32",
    loss={"type": "arcface", "scale": 32.0, "margin": 0.2},
    partial_fc=1.0,
    evaluation=[{"path": f"{DATA}/pairs_test.csv", "name": "celeba", "every_n_epochs": EPOCHS}],
    output="../runs/celeba299_small",
    strategy="none",
    seed=0,
    sync_batchnorm=True,
)
