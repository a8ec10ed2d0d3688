"""VersatileFFN in plain PyTorch, written the way a straightforward research implementation does it:
a Python loop over the virtual experts that copies each expert's weight slices on every call, every
token run to the deepest depth of the batch at inference, all loops in training. It is the yardstick
bench/ffn.ts is compared with, at the same shapes and thread count on the same CPU.

    /usr/bin/python3 bench/torch_reference.py [--threads 2] [--tokens 256,1024] [--reps 5]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

D, I, N, K, L = 1024, 4096, 8, 2, 4
E = I // N


def rms_norm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


class TorchVersatileFFN(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)

        def init(*shape):  # docs/SPEC.md: normal, std 0.02, truncated at 3 sigma
            return torch.nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(*shape), std=0.02, a=-0.06, b=0.06))

        self.ff_norm = torch.nn.Parameter(torch.ones(D))
        self.ff_proj = init(2 * I, D)
        self.ff_out = init(D, I)
        self.expert_gate = init(N, D)
        self.depth_predictor = init(L, D)

    def ffn(self, x, up, gate, out):
        n = rms_norm(x, self.ff_norm)
        return x + F.linear(F.silu(F.linear(n, gate)) * F.linear(n, up), out)

    def forward(self, x, train, tau=1.0):
        # width path: one expert at a time, its weights sliced out (copied) on every call
        logits = F.linear(x, self.expert_gate)
        top_v, top_i = logits.topk(K, dim=-1)
        w = F.softmax(top_v, dim=-1)
        x_width = torch.zeros_like(x)
        for e in range(N):
            off = e * (I - E) // (N - 1) if N > 1 else 0
            up = self.ff_proj[off:off + E].clone()
            gate = self.ff_proj[I + off:I + off + E].clone()
            out = self.ff_out[:, off:off + E].clone()
            tok, slot = (top_i == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y_e = self.ffn(x[tok], up, gate, out)
            x_width = x_width.index_add(0, tok, w[tok, slot].unsqueeze(-1) * y_e)
        # depth path
        z = F.linear(x, self.depth_predictor)
        if train:
            p = F.softmax(z / tau, dim=-1)
            h = F.one_hot(p.argmax(-1), L).to(x.dtype) - p.detach() + p
            depth = L
        else:
            h = F.one_hot(z.argmax(-1), L).to(x.dtype)
            depth = int(z.argmax(-1).max()) + 1  # every token runs to the batch's deepest depth
        up, gate = self.ff_proj[:I], self.ff_proj[I:]
        outs, cur = [], x
        for _ in range(depth):
            cur = self.ffn(cur, up, gate, self.ff_out)
            outs.append(cur)
        x_depth = (h[:, :depth, None] * torch.stack(outs, dim=1)).sum(1)
        loops = (h * torch.arange(1, L + 1, dtype=x.dtype)).sum(-1, keepdim=True)
        lam = (L - loops) / L
        return (1 - lam) * x_depth + lam * x_width, loops


class TorchDenseFFN(torch.nn.Module):
    def __init__(self, ref):
        super().__init__()
        self.ref = ref

    def forward(self, x):
        r = self.ref
        return r.ffn(x, r.ff_proj[:I], r.ff_proj[I:], r.ff_out)


def uniform_depth(model, x):
    with torch.no_grad():
        model.depth_predictor.zero_()
        for j in range(L):
            model.depth_predictor[j, j] = 10.0
        x = x.clone()
        x[:, :L] = 0
        x[torch.arange(x.shape[0]), torch.arange(x.shape[0]) % L] = 3.0
    return x


def timed(fn, reps, threads):
    """median wall ms and median CPU ms per thread (steadier when other processes share the cores)"""
    fn()
    ts, cs = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
        cs.append((time.process_time() - c0) * 1e3 / threads)
    return statistics.median(ts), statistics.median(cs)


def check(path):
    """compares this rendering with the addon on the small case bench/ffn.ts --dump-check wrote"""
    global D, I, N, K, L, E
    c = json.load(open(path))
    D, I, N, K, L, T = c['D'], c['I'], c['N'], c['K'], c['L'], c['T']
    E = I // N
    torch.set_default_dtype(torch.float64)  # float64 here, float32 there: differences are the addon's rounding
    m = TorchVersatileFFN(0)
    names = {'ff_norm.weight': 'ff_norm', 'ff_proj.weight': 'ff_proj', 'ff_out.weight': 'ff_out',
             'expert_gate.weight': 'expert_gate', 'depth_predictor.weight': 'depth_predictor'}
    with torch.no_grad():
        for k, attr in names.items():
            p = getattr(m, attr)
            p.copy_(torch.tensor(c['weights'][k]).reshape(p.shape))
    x = torch.tensor(c['x']).reshape(T, D)
    dy = torch.tensor(c['dy']).reshape(T, D)
    with torch.no_grad():
        y, loops = m(x, False)
    diffs = {'inference y': (y.flatten() - torch.tensor(c['yInfer'])).abs().max().item(),
             'loops': (loops.flatten() - torch.tensor(c['loops'], dtype=torch.float64)).abs().max().item()}
    xr = x.clone().requires_grad_(True)
    y, _ = m(xr, True, tau=c['tau'])
    (y * dy).sum().backward()
    diffs['training y'] = (y.detach().flatten() - torch.tensor(c['yTrain'])).abs().max().item()
    diffs['dx'] = (xr.grad.flatten() - torch.tensor(c['dx'])).abs().max().item()
    for k, attr in names.items():
        diffs['d ' + k] = (getattr(m, attr).grad.flatten() - torch.tensor(c['grads'][k])).abs().max().item()
    for k, v in diffs.items():
        print(f'{k}: max |diff| {v:.2e}')
    ok = all(v < 1e-4 for v in diffs.values())  # float32 kernels vs float64 autograd at O(1) values
    print('check', 'passed' if ok else 'FAILED')
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--tokens', default='256,1024')
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--check', help='JSON from bench/ffn.ts --dump-check: compare, then exit')
    a = ap.parse_args()
    if a.check:
        raise SystemExit(0 if check(a.check) else 1)
    torch.set_num_threads(a.threads)
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads, D={D} I={I} N={N} K={K} L={L} E={E}')
    print('| T | case | ms (median) | CPU ms / thread |')
    print('|---|---|---|---|')
    rows = []
    for T in [int(t) for t in a.tokens.split(',')]:
        model = TorchVersatileFFN(1)
        dense = TorchDenseFFN(model)
        x = torch.randn(T, D, generator=torch.Generator().manual_seed(7))
        dy = torch.randn(T, D, generator=torch.Generator().manual_seed(8)) * 1e-3

        def row(name, times):
            ms, cpu = times
            rows.append({'T': T, 'case': name, 'ms': ms, 'cpuMs': cpu})
            print(f'| {T} | {name} | {ms:.1f} | {cpu:.1f} |', flush=True)

        with torch.no_grad():
            row('dense FFN forward', timed(lambda: dense(x), a.reps, a.threads))

        def dense_train():
            model.zero_grad(set_to_none=True)
            xr = x.clone().requires_grad_(True)
            (dense(xr) * dy).sum().backward()
        row('dense FFN train fwd+bwd', timed(dense_train, a.reps, a.threads))

        uniform = TorchVersatileFFN(1)
        xu = uniform_depth(uniform, x)  # the same construction as bench/ffn.ts
        for label, xi, m in [('random-init head', x, model), ('loops uniform 1..4', xu, uniform)]:
            with torch.no_grad():
                row(f'versatile inference, {label}', timed(lambda: m(xi, False), a.reps, a.threads))

            def train():
                m.zero_grad(set_to_none=True)
                xr = xi.clone().requires_grad_(True)
                y, _ = m(xr, True, tau=5.0)
                (y * dy).sum().backward()
            row(f'versatile train fwd+bwd, {label}', timed(train, a.reps, a.threads))
    print(json.dumps({'threads': a.threads, 'rows': rows}))


if __name__ == '__main__':
    main()
