import torch, time, sys
torch.set_num_threads(1)
a = torch.randn(1024, 1024); b = torch.randn(1024, 1024)
n = int(sys.argv[1]); t = time.perf_counter()
for _ in range(n): a @ b
dt = time.perf_counter() - t
print(sys.argv[2], "GFLOPS", round(2 * 1024**3 * n / dt / 1e9, 1))
