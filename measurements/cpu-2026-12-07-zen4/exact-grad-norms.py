import sys, json, torch
sys.path.insert(0, "tests")
from model_weights import fill_params, load_fixture
from helpers import FIXTURES
from hmrepro import create_model
from hmrepro.engine.training.train import train_step, build_optimizer
dtype = getattr(torch, sys.argv[2]) if len(sys.argv) > 2 else torch.float64
name = sys.argv[1]
exp = load_fixture(FIXTURES / f"train_{name}_resnet50.pt")
meta = exp["meta"] if isinstance(exp["meta"], dict) else json.loads(exp["meta"])
inputs = load_fixture(FIXTURES / meta["inputs"])
n = 1 if "[:1]" in meta.get("batch", "") else 2
model = fill_params(create_model(name, backbone="resnet50", pretrained=False, benchmark="pascal"))
model = model.to(dtype)
batch = {"query_img": inputs["query_img"][:n].to(dtype), "support_imgs": inputs["support_imgs"][:n].to(dtype),
         "support_masks": inputs["support_masks"][:n].to(dtype), "query_mask": inputs["query_mask"][:n].to(dtype)}
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.Adam(params, lr=0.0)
torch.manual_seed(1000)
loss, _ = train_step(model, batch, opt)
names = meta["grad_param_names"]
got = {k: p.grad.double().norm() for k, p in model.named_parameters() if p.grad is not None}
exp_n = exp["grad_norms_step0"].double()
rel = torch.tensor([(got[k] - exp_n[i]).abs().item() / exp_n[i].item() for i, k in enumerate(names)])
print(dtype, "loss", loss.item(), "vs", exp["losses"][0].item())
order = rel.argsort(descending=True)[:6]
for i in order.tolist():
    print(f"  {names[i]}: {got[names[i]].item():.9g} fixture {exp_n[i].item():.9g} rel {rel[i].item():.2e}")
