"""Child process of the kill/resume test: one ISP run into a run directory.

usage: python isp_child.py RUN_DIR MODEL_DIR SLOW   (SLOW=1 sleeps 20 ms per step so the parent can
kill it mid-round)
"""
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))

import instantsoup  # noqa: E402
from conftest import make_tiny_task  # noqa: E402


def settings():
    from instantsoup.config import PruneSettings, Settings, TrainSettings

    return Settings(train=TrainSettings(batch_size=16, lr=5e-3, epochs=3, seed=5),
                    prune=PruneSettings(method="isp", sparsity=0.6, step=0.3, t=2, denoisers=2, lookahead=3))


def main():
    run_dir, model_dir, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    instantsoup.set_num_threads(1)  # same thread count in every run (bitwise-equal masks)
    model = instantsoup.load_model(model_dir, num_labels=2, seed=0)
    if slow:
        from instantsoup.train import StepOrder

        orig = StepOrder.indices

        def slow_indices(self, step):
            time.sleep(0.02)
            return orig(self, step)

        StepOrder.indices = slow_indices
    from instantsoup.methods import instant_soup

    instant_soup(model, make_tiny_task(vocab=60), settings(), run_dir=run_dir, progress=False)
    print("done", flush=True)


if __name__ == "__main__":
    main()
