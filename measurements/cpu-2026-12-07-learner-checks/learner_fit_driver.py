import sys, time, json, resource
sys.path.insert(0, "/work/main/tests")
import torch
from pathlib import Path
from learner_fit import learner_fit
which, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
root = Path("/tmp/lf/syn")
t = time.process_time()
if which == "vat":
    s = learner_fit("vat-hm", "fss", root, img_size=64, preprocess="vat", steps=steps, lr=lr, heldout_episodes=0, model_args={"benchmark": "fss"})
else:
    size = 400
    s = learner_fit("asnet-hm", "pascal", root, img_size=size, preprocess="hsnet", steps=steps, lr=lr, train_episodes=2, heldout_episodes=2,
        logits=lambda net, q, st, b: net.logits_from_taps(q, st, b["support_mask"], (size, size)))
print(which, steps, lr, torch.get_num_threads(), json.dumps(s), "cpu", round(time.process_time() - t, 1))
