import torch, time, sys
torch.set_num_threads(1)
x = torch.randn(64 * 1024 * 1024 // 4 * 4)  # 256 MB
n = int(sys.argv[1]); t = time.perf_counter()
for _ in range(n): y = x * 1.0001
dt = time.perf_counter() - t
print(sys.argv[2], "GB/s", round(2 * x.numel() * 4 * n / dt / 1e9, 1))
