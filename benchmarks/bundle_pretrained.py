"""Write the files that ship inside numpy_vit (numpy_vit/data/): a trained checkpoint's weights as float32 .npz,
a JSON of how they were made (read from the run's record under benchmarks/results/runs/, never typed), and the
first test image of each class of an image-folder data set as uint8.

    python benchmarks/bundle_pretrained.py runs/muon-s4/checkpoint.pt --run muon-s4 \\
        --data imagefolder:../cifar10-jpeg
"""

import argparse
import hashlib
import io
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from numpy_vit.io import atomic_write, save_npz, write_json  # noqa: E402
from numpy_vit.pretrained import INFO, SAMPLES, WEIGHTS  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--run", required=True, help="the run's record: benchmarks/results/runs/RUN/run.json")
    ap.add_argument("--data", required=True, help="the data set the run was trained on (imagefolder:PATH)")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    from torch_vit import load_checkpoint
    from torch_vit.data import load

    record_dir = ROOT / "benchmarks" / "results" / "runs" / args.run
    run = json.loads((record_dir / "run.json").read_text())
    config = json.loads((record_dir / "config.json").read_text())
    model, _ = load_checkpoint(args.checkpoint)
    arrays = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_npz(WEIGHTS, arrays)
    info = dict(run=args.run, command=run["command"], recipe=config["recipe"], seed=run["seed"],
                threads=run["threads"], machine=run["machine"], data=run["data"], test_acc=run["test_acc"],
                train_acc=run["train_acc"], epochs=run["epochs"], model=dict(model.config),
                mean=config["mean"], std=config["std"], classes=config["classes"],
                sha256=hashlib.sha256(WEIGHTS.read_bytes()).hexdigest(),
                record=f"benchmarks/results/runs/{args.run}/", train_config=config)
    write_json(INFO, info)

    data = load(args.data, cache_dir=args.cache_dir, progress=False)
    labels = data.test_y.numpy()
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(len(data.classes))]
    buf = io.BytesIO()
    np.savez_compressed(buf, images=data.test_x[first].numpy().astype(np.uint8), labels=labels[first],
                        class_names=np.array(data.classes), test_index=np.array(first))
    atomic_write(SAMPLES, lambda f: f.write(buf.getvalue()))
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size:,} bytes), {INFO}, {SAMPLES} (test images {first})")


if __name__ == "__main__":
    sys.exit(main())
