"""Train the water-meter segmentation model with numpy only, in a few seconds.

The model classifies each pixel from local features (colour and brightness averaged over
windows of several sizes, local contrast) with a one-hidden-layer network trained by Adam.
It is small on purpose: the example shows the pipeline, not a state-of-the-art U-Net, but it
is a real model whose quality follows the quality of its training data.

Quality is measured on a fixed holdout set (`--holdout`, default `holdout/`, regenerated
exactly by `generate.py` with seed 999 when missing) that never enters the training data, so
rounds trained on different data are compared on the same images. With another `--holdout`
that does not exist, every fifth training pair (by name) is held out instead.

Writes (the traingate metrics-file contract):
  outputs/metrics.json   {"dice": ..., "iou": ..., "loss": ..., "pixel_accuracy": ...}
  outputs/metrics.jsonl  one object per epoch with "step"
  outputs/model.npz      weights and feature normalisation
  outputs/params.json    the hyperparameters and data sizes (logged as MLflow parameters)
  outputs/model/         an MLflow pyfunc model (when mlflow is importable here), so the
                         registered champion loads with mlflow.pyfunc.load_model and its
                         predict() turns an (N, H, W, 3) float batch in [0, 1] into (N, H, W) masks

Exits non-zero with a message on stderr when the data is missing or unreadable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
RADII = (2, 5, 11)
CONTRAST_RADII = (3, 8)


class DataProblem(Exception):
    pass


def load_pairs(root: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    from PIL import Image

    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataProblem(f"{root} must hold images/ and masks/ (run `traingate data merge` first)")
    images, masks, names = [], [], []
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask_path = masks_dir / f"{path.stem}.png"
        if not mask_path.exists():
            raise DataProblem(f"{path} has no mask {mask_path}")
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        with Image.open(mask_path) as im:
            mask = np.asarray(im.convert("L")) > 127
        if image.shape[:2] != mask.shape:
            raise DataProblem(f"{path} is {image.shape[1]}x{image.shape[0]} but its mask is not")
        images.append(image)
        masks.append(mask)
        names.append(path.stem)
    if not images:
        raise DataProblem(f"no images in {images_dir}")
    return images, masks, names


def _box_mean(channels: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window of each channel (HxWxC), edges padded, via summed areas."""
    k = 2 * radius + 1
    pad = np.pad(channels, ((radius + 1, radius), (radius + 1, radius), (0, 0)), mode="edge")
    sat = pad.cumsum(axis=0).cumsum(axis=1)
    total = sat[k:, k:] - sat[:-k, k:] - sat[k:, :-k] + sat[:-k, :-k]
    return total / (k * k)


def features(image: np.ndarray) -> np.ndarray:
    """Per-pixel features, HxWxF."""
    h, w, _ = image.shape
    gray = image.mean(axis=2, keepdims=True)
    parts = [image, gray]
    for r in RADII:
        parts.append(_box_mean(image, r))
    for r in CONTRAST_RADII:
        mean = _box_mean(gray, r)
        sq = _box_mean(gray * gray, r)
        parts.append(np.sqrt(np.maximum(sq - mean * mean, 0.0)))
    # Context: is this pixel brighter than its wide surroundings?
    parts.append(_box_mean(gray, 5) - _box_mean(gray, 16))
    yy, xx = np.mgrid[0:h, 0:w]
    parts.append(np.stack([yy / h - 0.5, xx / w - 0.5], axis=2))
    return np.concatenate(parts, axis=2).astype(np.float32)


class Model:
    def __init__(self, n_features: int, hidden: int, rng: np.random.Generator) -> None:
        self.w1 = (rng.standard_normal((n_features, hidden)) / np.sqrt(n_features)).astype(np.float32)
        self.b1 = np.zeros(hidden, np.float32)
        self.w2 = (rng.standard_normal(hidden) / np.sqrt(hidden)).astype(np.float32)
        self.b2 = np.float32(0.0)
        self.mean = np.zeros(n_features, np.float32)
        self.std = np.ones(n_features, np.float32)

    def params(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, np.asarray(self.b2)]

    def logits(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.tanh(x @ self.w1 + self.b1)
        return h @ self.w2 + self.b2, h

    def predict(self, feats: np.ndarray) -> np.ndarray:
        shape = feats.shape[:2]
        x = (feats.reshape(-1, feats.shape[2]) - self.mean) / self.std
        z, _ = self.logits(x)
        return (z > 0).reshape(shape)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def evaluate(model: Model, feats: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
    dices, ious, correct, total, loss = [], [], 0, 0, 0.0
    for f, m in zip(feats, masks, strict=True):
        x = (f.reshape(-1, f.shape[2]) - model.mean) / model.std
        z, _ = model.logits(x)
        y = m.reshape(-1)
        p = sigmoid(z)
        loss += float(-np.sum(y * np.log(p + 1e-7) + (1 - y) * np.log(1 - p + 1e-7)))
        pred = z > 0
        inter = float(np.sum(pred & y))
        union = float(np.sum(pred | y))
        size = float(pred.sum() + y.sum())
        dices.append(2 * inter / size if size else 1.0)
        ious.append(inter / union if union else 1.0)
        correct += int(np.sum(pred == y))
        total += y.size
    return {
        "dice": round(float(np.mean(dices)), 6),
        "iou": round(float(np.mean(ious)), 6),
        "loss": round(loss / total, 6),
        "pixel_accuracy": round(correct / total, 6),
    }


def train(
    train_feats: list[np.ndarray],
    train_masks: list[np.ndarray],
    eval_feats: list[np.ndarray],
    eval_masks: list[np.ndarray],
    *,
    epochs: int,
    hidden: int,
    lr: float,
    seed: int,
    per_image: int,
    log: object,
) -> tuple[Model, dict[str, float]]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for f, m in zip(train_feats, train_masks, strict=True):
        flat = f.reshape(-1, f.shape[2])
        idx = rng.choice(flat.shape[0], size=min(per_image, flat.shape[0]), replace=False)
        xs.append(flat[idx])
        ys.append(m.reshape(-1)[idx].astype(np.float32))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    model = Model(x.shape[1], hidden, rng)
    model.mean = x.mean(axis=0)
    model.std = x.std(axis=0) + 1e-6
    x = (x - model.mean) / model.std

    params = model.params()
    m_state = [np.zeros_like(p) for p in params]
    v_state = [np.zeros_like(p) for p in params]
    b1, b2, step, batch = 0.9, 0.999, 0, 2048
    metrics: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        order = rng.permutation(x.shape[0])
        for start in range(0, x.shape[0], batch):
            ib = order[start : start + batch]
            xb, yb = x[ib], y[ib]
            z, h = model.logits(xb)
            g = (sigmoid(z) - yb) / len(ib)  # d(mean BCE)/dz
            gh = np.outer(g, model.w2) * (1 - h * h)
            grads = [xb.T @ gh, gh.sum(axis=0), h.T @ g, np.asarray(g.sum())]
            step += 1
            for i, (p, gr) in enumerate(zip(params, grads, strict=True)):
                m_state[i] = b1 * m_state[i] + (1 - b1) * gr
                v_state[i] = b2 * v_state[i] + (1 - b2) * gr * gr
                update = lr * (m_state[i] / (1 - b1**step)) / (np.sqrt(v_state[i] / (1 - b2**step)) + 1e-8)
                p -= update.astype(p.dtype)
            model.b2 = np.float32(params[3])
        metrics = evaluate(model, eval_feats, eval_masks)
        log({"step": epoch, **metrics})  # type: ignore[operator]
    return model, metrics


def save_mlflow_model(model: Model, folder: Path) -> bool:
    """Save `model` as an MLflow pyfunc model in `folder`; False when mlflow is not installed
    (the numpy files are still written, but the registered version will not be loadable)."""
    try:
        import mlflow
        import mlflow.pyfunc
    except ImportError:
        print(f"mlflow is not importable here: {folder} (an MLflow model) was not written", flush=True)
        return False

    class MeterSegmenter(mlflow.pyfunc.PythonModel):
        """predict: (N, H, W, 3) or (H, W, 3) RGB floats in [0, 1] -> boolean masks (N, H, W)."""

        def __init__(self, trained: Model) -> None:
            self.trained = trained

        def predict(self, context, model_input, params=None):
            batch = np.asarray(model_input, dtype=np.float32)
            if batch.ndim == 3:
                batch = batch[None]
            if batch.ndim != 4 or batch.shape[-1] != 3:
                raise ValueError(f"expected an (N, H, W, 3) batch of RGB images, got shape {batch.shape}")
            return np.stack([self.trained.predict(features(image)) for image in batch])

    # save_model refuses an existing folder; an old model must never pass for this run's.
    shutil.rmtree(folder, ignore_errors=True)
    import warnings

    with warnings.catch_warnings():
        # "add type hints to predict": the batch is an array, checked in predict itself.
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(
            str(folder),
            python_model=MeterSegmenter(model),
            # Explicit requirements: inferring them would load the model in a subprocess.
            pip_requirements=[f"numpy=={np.__version__}", f"mlflow-skinny=={mlflow.__version__}"],
        )
    print(f"saved the MLflow pyfunc model {folder}", flush=True)
    return True


HOLDOUT_SEED = 999
HOLDOUT_PAIRS = 24


def _make_holdout(folder: Path) -> None:
    """The example's data is synthetic, so its fixed holdout set can be regenerated exactly
    (same seed, same images) instead of being committed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import generate
    except ImportError:
        return
    generate.generate(folder, HOLDOUT_PAIRS, seed=HOLDOUT_SEED, prefix="holdout")
    print(f"created the holdout set {folder} ({HOLDOUT_PAIRS} pairs, seed {HOLDOUT_SEED})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("TRAINGATE_DATA_ROOT", "data/training"))
    )
    parser.add_argument("--holdout", type=Path, default=Path("holdout"))
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixels-per-image", type=int, default=3000)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")

    started = time.perf_counter()
    try:
        images, masks, _names = load_pairs(args.data)
        if not args.holdout.is_dir() and args.holdout == Path("holdout"):
            _make_holdout(args.holdout)
        if args.holdout.is_dir():
            eval_images, eval_masks, _ = load_pairs(args.holdout)
            train_idx = list(range(len(images)))
        else:
            held = [i for i in range(len(images)) if i % 5 == 4]
            if not held or len(held) == len(images):
                raise DataProblem(
                    f"{len(images)} pair(s) in {args.data} are too few to hold some out and "
                    f"{args.holdout} does not exist; add data or create the holdout set"
                )
            eval_images, eval_masks = [images[i] for i in held], [masks[i] for i in held]
            train_idx = [i for i in range(len(images)) if i % 5 != 4]
    except (DataProblem, OSError) as err:
        print(f"train.py: {err}", file=sys.stderr)
        return 1

    print(f"training on {len(train_idx)} pairs, evaluating on {len(eval_images)} holdout pairs", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "metrics.jsonl"
    with log_path.open("w", encoding="utf-8") as log_file:

        def log(record: dict[str, float]) -> None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            print(
                f"epoch {record['step']}: dice={record['dice']:.4f} iou={record['iou']:.4f} "
                f"loss={record['loss']:.4f}",
                flush=True,
            )

        model, metrics = train(
            [features(images[i]) for i in train_idx],
            [masks[i] for i in train_idx],
            [features(im) for im in eval_images],
            eval_masks,
            epochs=args.epochs,
            hidden=args.hidden,
            lr=args.lr,
            seed=args.seed,
            per_image=args.pixels_per_image,
            log=log,
        )
    np.savez(
        args.out / "model.npz",
        w1=model.w1,
        b1=model.b1,
        w2=model.w2,
        b2=model.b2,
        mean=model.mean,
        std=model.std,
        radii=np.array(RADII),
        contrast_radii=np.array(CONTRAST_RADII),
    )
    params = {
        "epochs": args.epochs,
        "hidden": args.hidden,
        "lr": args.lr,
        "seed": args.seed,
        "pixels_per_image": args.pixels_per_image,
        "train_pairs": len(train_idx),
        "eval_pairs": len(eval_images),
    }
    (args.out / "params.json").write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    save_mlflow_model(model, args.out / "model")
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(
        f"done in {time.perf_counter() - started:.1f}s: dice={metrics['dice']:.4f} iou={metrics['iou']:.4f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
