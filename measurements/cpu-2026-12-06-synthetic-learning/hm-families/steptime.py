import sys, time, resource, torch, hmrepro
name, bench, size, bsz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kw = {"benchmark": bench} if name.startswith("vat") else {}
m = hmrepro.create_model(name, backbone="resnet50", pretrained=False, **kw)
m.train()
params = [p for p in m.parameters() if p.requires_grad]
opt = torch.optim.Adam(params, 1e-3)
q = torch.randn(bsz, 3, size, size); s = torch.randn(bsz, 3, size, size)
sm = torch.zeros(bsz, size, size); sm[:, size//4:3*size//4, size//4:3*size//4] = 1
qm = sm.clone().long()
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
for i in range(2):
    c0, t0 = cpu(), time.perf_counter()
    out = m(q, s, sm)
    logits = out if torch.is_tensor(out) else out[0] if isinstance(out, tuple) else out["logits"]
    loss = torch.nn.functional.cross_entropy(logits, qm) if logits.shape[-1] == size else logits.float().mean()
    opt.zero_grad(); loss.backward(); opt.step()
    c1 = cpu()
    m.eval()
    with torch.no_grad(): m(q, s, sm)
    m.train()
    print(f"{name} {size}px bsz {bsz}: train step {c1-c0:.1f} s CPU, eval fwd {cpu()-c1:.1f} s CPU, wall {time.perf_counter()-t0:.1f}, maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6:.2f} GB", flush=True)
