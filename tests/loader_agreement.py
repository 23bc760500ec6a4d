"""Which loaders load an export, and how often their top-1 labels agree with food101hf's, on a folder of images.

    python tests/loader_agreement.py outputs/demo outputs/demo-80 --images "$FOOD101HF_CACHE_OR_HOME/demo-v1/validation"

Each export is loaded from its folder and, pushed to tests/hub_server.py on 127.0.0.1 (HF_ENDPOINT), from the Hub,
by timm (local-dir: / hf-hub:), food101hf's Predictor (its default precision, and fp32), transformers'
AutoModelForImageClassification and pipeline("image-classification"). Prints one row per loader: top-1 agreement
with food101hf fp32 from the folder, and the largest probability difference.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="loader-agreement-hf-"))
os.environ.update(HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_local_test_token")

from PIL import Image  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--images", required=True, help="folder of <class>/<image> files")
    args = parser.parse_args()
    extensions = set(Image.registered_extensions())
    paths = sorted(str(p) for p in Path(args.images).rglob("*") if p.suffix.lower() in extensions)

    from hub_server import HubServer

    with HubServer(token=os.environ["HF_TOKEN"]) as hub:
        os.environ["HF_ENDPOINT"] = hub.url  # before huggingface_hub is imported: it reads it once
        from food101hf.publish import push_folder
        from loaders import (food101hf_scores, timm_scores, top1, transformers_auto_scores,
                             transformers_pipeline_scores)

        for i, folder in enumerate(args.folders):
            repo = f"food/export-{i}"
            push_folder(folder, repo)
            reference = food101hf_scores(folder, paths, precision="fp32")
            rows = {
                "food101hf, folder, default precision": lambda: food101hf_scores(folder, paths),
                "food101hf, Hub, fp32": lambda: food101hf_scores(repo, paths, precision="fp32"),
                "timm local-dir:": lambda: timm_scores(f"local-dir:{folder}", paths),
                "timm hf-hub:": lambda: timm_scores(f"hf-hub:{repo}", paths),
                "transformers Auto*, folder": lambda: transformers_auto_scores(folder, paths),
                "transformers Auto*, Hub": lambda: transformers_auto_scores(repo, paths),
                "transformers pipeline, folder": lambda: transformers_pipeline_scores(folder, paths),
                "transformers pipeline, Hub": lambda: transformers_pipeline_scores(repo, paths),
            }
            print(f"\n{folder} ({len(paths)} images; reference: food101hf fp32 from the folder)")
            for name, run in rows.items():
                try:
                    scores = run()
                except Exception as e:  # a loader that fails is a row of the table, not the end of it
                    print(f"  {name:40s} FAILS: {type(e).__name__}: {e}")
                    continue
                agree = sum(a == b for a, b in zip(top1(scores), top1(reference)))
                diff = max(abs(s[k] - r[k]) for s, r in zip(scores, reference) for k in r)
                print(f"  {name:40s} top-1 agrees {agree}/{len(paths)}, max |p - p_ref| {diff:.2e}")


if __name__ == "__main__":
    main()
