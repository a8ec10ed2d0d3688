"""The PyTorch yardsticks of the CUDA benchmarks (bench/cuda-gemm.ts, bench/cuda-ffn.ts), on the
same GPU, in bfloat16, timed with CUDA events (median of reps, after warm-up). Prints one JSON
line. Written from docs/SPEC.md; the VersatileFFN here is the straightforward algorithm: a Python loop
over experts with the slices copied, every token run to the batch's deepest loop at inference.

    python3 bench/torch_cuda.py gemm --shapes 4096x8192x1024,4096x1024x4096
    python3 bench/torch_cuda.py ffn --tokens 4096,16384
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

D, I, N, K, L = 1024, 4096, 8, 2, 4
E = I // N
dev = 'cuda'
bf16 = torch.bfloat16


def timed_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def gemm(shapes):
    rows = []
    for s in shapes:
        M, Nn, Kk = (int(v) for v in s.split('x'))
        # fresh random operands (never zeros: they run faster than real data)
        a = torch.randn(M, Kk, device=dev, dtype=bf16)
        w = torch.randn(Nn, Kk, device=dev, dtype=bf16)
        ms = timed_ms(lambda: a @ w.t())
        rows.append({'M': M, 'N': Nn, 'K': Kk, 'ms': ms, 'tflops': 2 * M * Nn * Kk / ms / 1e9})
    return rows


def rms_norm(x, w):
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * w


class Versatile(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator(device='cpu').manual_seed(1)
        init = lambda *s: torch.nn.Parameter((torch.randn(*s, generator=g) * 0.02).to(dev, bf16))
        self.norm = torch.nn.Parameter(torch.ones(D, device=dev, dtype=bf16))
        self.proj, self.out = init(2 * I, D), init(D, I)
        self.router, self.depth = init(N, D), init(L, D)

    def ffn(self, x, up, gate, out):
        n = rms_norm(x, self.norm)
        return x + F.linear(F.silu(F.linear(n, gate)) * F.linear(n, up), out)

    def dense(self, x):
        return self.ffn(x, self.proj[:I], self.proj[I:], self.out)

    def forward(self, x, train, tau=5.0):
        top_v, top_i = F.linear(x, self.router).topk(K, dim=-1)
        w = F.softmax(top_v.float(), dim=-1).to(x.dtype)
        x_width = x.clone()
        for e in range(N):
            off = e * (I - E) // (N - 1)
            up, gate = self.proj[off:off + E].clone(), self.proj[I + off:I + off + E].clone()
            out = self.out[:, off:off + E].clone()
            tok, slot = (top_i == e).nonzero(as_tuple=True)
            if tok.numel():
                y_e = self.ffn(x[tok], up, gate, out) - x[tok]
                x_width = x_width.index_add(0, tok, w[tok, slot].unsqueeze(-1) * y_e)
        z = F.linear(x, self.depth).float()
        if train:
            p = F.softmax(z / tau, dim=-1)
            h = F.one_hot(p.argmax(-1), L).float() - p.detach() + p
            depth = L
        else:
            h = F.one_hot(z.argmax(-1), L).float()
            depth = int(z.argmax(-1).max()) + 1  # .item(): the host waits here, as research code does
        outs, cur = [], x
        for _ in range(depth):
            cur = self.dense(cur)
            outs.append(cur)
        x_depth = (h[:, :depth, None] * torch.stack(outs, 1).float()).sum(1)
        loops = (h * torch.arange(1, L + 1, device=dev, dtype=torch.float32)).sum(-1, keepdim=True)
        lam = (L - loops) / L
        return ((1 - lam) * x_depth + lam * x_width.float()).to(x.dtype)


def ffn(tokens):
    rows = []
    m = Versatile()
    for T in tokens:
        x = torch.randn(T, D, device=dev, dtype=bf16)
        dy = torch.randn(T, D, device=dev, dtype=bf16) * 1e-3

        def train(f):
            def step():
                m.zero_grad(set_to_none=True)
                (f(x.clone().requires_grad_(True)) * dy).sum().backward()
            return step
        with torch.no_grad():
            rows.append({'T': T, 'case': 'dense forward', 'ms': timed_ms(lambda: m.dense(x))})
            rows.append({'T': T, 'case': 'versatile inference', 'ms': timed_ms(lambda: m(x, False))})
        rows.append({'T': T, 'case': 'dense train step', 'ms': timed_ms(train(m.dense))})
        rows.append({'T': T, 'case': 'versatile train step', 'ms': timed_ms(train(lambda v: m(v, True)))})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('mode', choices=['gemm', 'ffn'])
    ap.add_argument('--shapes', default='4096x8192x1024,4096x1024x4096')
    ap.add_argument('--tokens', default='4096,8192,16384')
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({'error': 'torch sees no CUDA device'}))
        return
    rows = gemm(a.shapes.split(',')) if a.mode == 'gemm' else ffn([int(t) for t in a.tokens.split(',')])
    print(json.dumps({'torch': torch.__version__, 'gpu': torch.cuda.get_device_name(), 'rows': rows}))


if __name__ == '__main__':
    main()
