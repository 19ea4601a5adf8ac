"""Fine-tune a keras_fr network on one folder per identity, evaluate on a pair set, save the backbone.

Default data: the CelebA subset beside the project (``../shared/data/celeba299``): the ``train``
identities of ``split.csv`` are read in place (no copy) and ``pairs_test.csv`` (``test`` identities
only) measures the result. Any other tree with one folder per identity works (``--data-root``,
``--split-csv ""``), with any pair set ``keras_fr.evaluation.read_pairs`` reads (``--pairs``).

    # the MSConv paper's recipe, scaled to this dataset and batch size
    python examples/finetune.py --model msconv_resnet50 --weights PATH_OR_TAG --epochs 5 --batch-size 32
    # LGAF (ArcFace m=0.4 or --loss cosface), its augmentations and step schedule
    python examples/finetune.py --model lgaf_resnet100 --recipe lgaf --epochs 5 --batch-size 16
    # a tiny smoke run
    python examples/finetune.py --model msconv_resnet26 --image-size 32 --max-identities 4 \\
        --epochs 1 --steps-per-epoch 2 --batch-size 8 --max-pairs 40 --output /tmp/backbone.keras

The run is resumable: kill it and start the same command again; it continues from the last completed
epoch (``--backup-dir``). A NaN loss stops it with a message.
"""

import argparse
import json
import os
import pathlib
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
CELEBA = REPO_ROOT.parent / "shared" / "data" / "celeba299"


def parse_args(argv=None):
    from keras_fr.cli._common import MODELS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="msconv_resnet50", choices=sorted(MODELS))
    p.add_argument("--weights", default=None, help="preset tag or weights file to start from (default: random)")
    p.add_argument("--data-root", default=str(CELEBA / "images"), help="one sub-folder of images per identity")
    p.add_argument("--split-csv", default=str(CELEBA / "split.csv"),
                   help="identity,split CSV; only the 'train' identities are used ('' = all folders)")
    p.add_argument("--pairs", default=str(CELEBA / "pairs_test.csv"), help="pair set to evaluate on ('' = none)")
    p.add_argument("--recipe", choices=("msconv", "lgaf"), default=None,
                   help="training recipe (default: lgaf for lgaf_* models, else msconv)")
    p.add_argument("--loss", choices=("arcface", "cosface"), default="arcface", help="LGAF recipe's loss")
    p.add_argument("--gradient", choices=("straight_through", "exact"), default="straight_through")
    p.add_argument("--image-size", type=int, default=112,
                   help="input size (default 112); IResNet and LGAF heads need 112, MSConv models take others")
    p.add_argument("--embedding-size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps-per-epoch", type=int, default=None, help="limit each epoch (default: one pass)")
    p.add_argument("--learning-rate", type=float, default=None, help="override the recipe's (scaled) initial rate")
    p.add_argument("--max-identities", type=int, default=None, help="use only the first N train identities")
    p.add_argument("--max-pairs", type=int, default=None, help="evaluate on N pairs (half same, half different)")
    p.add_argument("--eval-every", type=int, default=1, help="verification every N epochs during training (0 = off)")
    p.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"), default="float32")
    p.add_argument("--backup-dir", default=None, help="epoch backup for resuming (default: <output>.backup)")
    p.add_argument("--output", default="finetuned_backbone.keras", help="where the backbone (.keras) is saved")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _pairs(path, max_pairs):
    from keras_fr.evaluation import read_pairs

    pairs = read_pairs(path)
    if max_pairs is not None and max_pairs < len(pairs):
        import numpy as np

        half = max(1, max_pairs // 2)
        same = np.nonzero(pairs.issame)[0][:half]
        diff = np.nonzero(~pairs.issame)[0][:half]
        n = min(len(same), len(diff))
        # Alternate same/different so every contiguous fold of the protocol holds both kinds.
        pairs = pairs.subset(np.column_stack([same[:n], diff[:n]]).ravel())
    return pairs


def main(argv=None):
    args = parse_args(argv)
    if not args.output.endswith(".keras"):
        sys.exit("--output must end with .keras")
    if not os.path.isdir(args.data_root):
        sys.exit(f"image folder {args.data_root!r} not found (the CelebA subset is never committed; "
                 "pass --data-root with one folder per identity)")

    import keras

    from keras_fr import recipes
    from keras_fr.cli._common import build_model
    from keras_fr.data import image_folder_dataset, split_identities
    from keras_fr.training import FaceTrainingModel

    keras.utils.set_random_seed(args.seed)
    if args.precision != "float32":
        keras.config.set_dtype_policy(args.precision)

    classes = split_identities(args.split_csv, "train") if args.split_csv else None
    if classes is not None and args.max_identities:
        classes = classes[: args.max_identities]
    dataset, info = image_folder_dataset(
        args.data_root, image_size=args.image_size, batch_size=args.batch_size, seed=args.seed,
        classes=classes, repeat=args.steps_per_epoch is not None, drop_remainder=True,
    )
    print(f"training data: {info.summary()}")

    recipe_name = args.recipe or ("lgaf" if args.model.startswith("lgaf") else "msconv")
    steps = args.steps_per_epoch or max(1, info.num_images // args.batch_size)
    backup_dir = args.backup_dir or args.output + ".backup"
    extra = []
    pairs = None
    if args.pairs:
        pairs = _pairs(args.pairs, args.max_pairs)
        if args.eval_every:
            from keras_fr.training.callbacks import VerificationCallback

            extra.append(VerificationCallback(pairs, every_n_epochs=args.eval_every, name="pairs"))
    common = dict(num_images=steps * args.batch_size, batch_size=args.batch_size, epochs=args.epochs,
                  backup_dir=backup_dir, extra_callbacks=extra, gradient=args.gradient, seed=args.seed)
    if recipe_name == "msconv":
        recipe = recipes.msconv_recipe(**common)
    else:
        recipe = recipes.lgaf_recipe(loss=args.loss, **common)
    optimizer = recipe.optimizer
    if args.learning_rate is not None:
        ratio = args.learning_rate / recipe.learning_rate
        if recipe_name == "msconv":
            schedule = recipes.CosineDecayTo(args.learning_rate, recipe.schedule.final_learning_rate * ratio,
                                             recipe.schedule.decay_steps)
        else:
            schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
                recipe.schedule.boundaries, [v * ratio for v in recipe.schedule.values])
        optimizer = recipes.SGDWithL2(schedule, momentum=optimizer.momentum, l2=optimizer.l2)
    print(recipe.notes)

    backbone = build_model(args.model, args.weights, input_shape=(args.image_size, args.image_size, 3),
                           embedding_size=args.embedding_size)
    model = FaceTrainingModel(backbone, info.num_classes, augmentation=recipe.augmentation)
    model.compile(optimizer=optimizer, loss=recipe.loss, metrics=["sparse_categorical_accuracy"])
    start = time.perf_counter()
    history = model.fit(dataset, epochs=recipe.epochs, steps_per_epoch=steps if args.steps_per_epoch else None,
                        callbacks=recipe.callbacks, shuffle=False, verbose=2)  # the dataset shuffles
    seconds = time.perf_counter() - start

    summary = {"model": args.model, "recipe": recipe_name, "identities": info.num_classes,
               "images": info.num_images, "epochs": recipe.epochs, "train_seconds": round(seconds, 1),
               "loss": [float(v) for v in history.history.get("loss", [])]}
    if pairs is not None:
        from keras_fr.evaluation import evaluate_pairs

        result = evaluate_pairs(model.backbone, pairs, batch_size=64, flip=True, verbose=0)
        summary.update(pairs=args.pairs, num_pairs=len(pairs), accuracy=float(result.accuracy),
                       accuracy_std=float(result.accuracy_std))
        print(f"verification on {len(pairs)} pairs: {result.accuracy * 100:.2f}% "
              f"+- {result.accuracy_std * 100:.2f}")

    output = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    temp = output[: -len(".keras")] + f".tmp{os.getpid()}.keras"
    try:
        model.backbone.save(temp)
        os.replace(temp, output)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    summary["backbone"] = output
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
