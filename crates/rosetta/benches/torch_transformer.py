# The PyTorch peer of `ROSETTA_BENCH_MODEL=transformer cargo bench -p rosetta --bench vs_pytorch`: a
# pre-norm Transformer of the same shape as the Rust side (3+3 layers, d_model 256, 4 heads, feed-forward
# 1024, relu, one embedding table shared by source, target and output, sinusoidal positions, no dropout;
# vocabulary 8000, batch 64 x 25), built from torch.nn modules with PyTorch's fused
# scaled_dot_product_attention. Decoding keeps a key/value cache per layer as fairseq does
# (prev_key/prev_value grown with torch.cat, reordered with index_select), never re-running the prefix;
# cross-attention keys/values are computed once per batch.
#
#   python3 torch_transformer.py train|greedy|beam STEPS [--device cpu|cuda] [--threads N]
#
# Prints one line `RESULT {json}`. End-of-sentence is never chosen, so every decode runs T steps.
import argparse
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

B, S, T, V, D, H, FF, LAYERS = 64, 25, 25, 8000, 256, 4, 1024, 3
BOS, EOS = 2, 3
BEAM = 5


def sinusoid(length, d, start=0):
    pos = torch.arange(start, start + length, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * i / d)
    out = torch.zeros(length, d, dtype=torch.float64)
    out[:, 0::2] = torch.sin(angle)
    out[:, 1::2] = torch.cos(angle)
    return out.float()


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(D, D), nn.Linear(D, D)
        self.v_proj, self.out_proj = nn.Linear(D, D), nn.Linear(D, D)

    def heads(self, x):
        b, t, _ = x.shape
        return x.view(b, t, H, D // H).transpose(1, 2)

    def kv(self, memory):
        return self.heads(self.k_proj(memory)), self.heads(self.v_proj(memory))

    def attend(self, x, k, v, mask=None, causal=False):
        q = self.heads(self.q_proj(x))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        b, _, t, _ = ctx.shape
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, D))


class Layer(nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = Attention(), nn.LayerNorm(D)
        if cross:
            self.encoder_attn, self.encoder_attn_layer_norm = Attention(), nn.LayerNorm(D)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(D, FF), nn.Linear(FF, D), nn.LayerNorm(D)

    def ffn(self, x):
        return x + self.fc2(F.relu(self.fc1(self.final_layer_norm(x))))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Embedding(V, D)
        nn.init.normal_(self.shared.weight, 0, D**-0.5)
        self.enc = nn.ModuleList(Layer(False) for _ in range(LAYERS))
        self.dec = nn.ModuleList(Layer(True) for _ in range(LAYERS))
        self.enc_norm, self.dec_norm = nn.LayerNorm(D), nn.LayerNorm(D)

    def embed(self, ids, start=0):
        return self.shared(ids) * math.sqrt(D) + sinusoid(ids.shape[1], D, start).to(ids.device)

    def encode(self, src):
        x = self.embed(src)
        for l in self.enc:
            h = l.self_attn_layer_norm(x)
            x = x + l.self_attn.attend(h, *l.self_attn.kv(h))
            x = l.ffn(x)
        x = self.enc_norm(x)
        return [l.encoder_attn.kv(x) for l in self.dec]

    def logits(self, y):
        return self.dec_norm(y) @ self.shared.weight.T

    def loss(self, src, tgt_in, tgt_out):
        cross = self.encode(src)
        y = self.embed(tgt_in)
        for l, (ck, cv) in zip(self.dec, cross):
            h = l.self_attn_layer_norm(y)
            y = y + l.self_attn.attend(h, *l.self_attn.kv(h), causal=True)
            y = y + l.encoder_attn.attend(l.encoder_attn_layer_norm(y), ck, cv)
            y = l.ffn(y)
        return F.cross_entropy(self.logits(y).reshape(-1, V), tgt_out.reshape(-1))

    def step(self, y_ids, t, cache, cross):
        """One position for every row: cache[i] = (prev_key, prev_value) of layer i, or None."""
        y = self.embed(y_ids[:, None], start=t)
        for i, (l, (ck, cv)) in enumerate(zip(self.dec, cross)):
            h = l.self_attn_layer_norm(y)
            k, v = l.self_attn.kv(h)
            if cache[i] is not None:
                k = torch.cat([cache[i][0], k], dim=2)
                v = torch.cat([cache[i][1], v], dim=2)
            cache[i] = (k, v)
            y = y + l.self_attn.attend(h, k, v)
            y = y + l.encoder_attn.attend(l.encoder_attn_layer_norm(y), ck, cv)
            y = l.ffn(y)
        return self.logits(y[:, 0])

    @torch.no_grad()
    def greedy(self, src):
        cross = self.encode(src)
        cache = [None] * LAYERS
        y = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
        ys = []
        for t in range(T):
            logits = self.step(y, t, cache, cross)
            logits[:, EOS] = float("-inf")
            y = logits.argmax(1)
            ys.append(y)
        return torch.stack(ys, 1)

    @torch.no_grad()
    def beam(self, src, k=BEAM):
        n = src.shape[0]
        cross = self.encode(src)
        rows = torch.arange(n, device=src.device).repeat_interleave(k)
        cross = [(ck[rows], cv[rows]) for ck, cv in cross]
        cache = [None] * LAYERS
        score = torch.full((n, k), float("-inf"), device=src.device)
        score[:, 0] = 0.0
        y = torch.full((n * k,), BOS, dtype=torch.long, device=src.device)
        base = (torch.arange(n, device=src.device) * k).unsqueeze(1)
        history = []
        for t in range(T):
            lp = F.log_softmax(self.step(y, t, cache, cross), dim=1)
            lp[:, EOS] = float("-inf")
            cand = (score.unsqueeze(2) + lp.view(n, k, V)).view(n, k * V)
            score, idx = cand.topk(k, dim=1)
            origin = (idx // V + base).view(-1)
            y = (idx % V).view(-1)
            cache = [(pk.index_select(0, origin), pv.index_select(0, origin)) for pk, pv in cache]
            history.append((origin, y))
        return score, history


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "greedy", "beam"])
    ap.add_argument("steps", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    m = Model().to(dev)
    src = torch.randint(4, V, (B, S), device=dev)
    tgt = torch.randint(4, V, (B, T + 1), device=dev)
    tgt_in, tgt_out = tgt[:, :T], tgt[:, 1:]
    times = []
    warmup = 3 if args.mode == "train" else 2
    if args.mode == "train":
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    else:
        m.eval()
    for i in range(args.steps + warmup):
        sync()
        t0 = time.perf_counter()
        if args.mode == "train":
            opt.zero_grad(set_to_none=True)
            loss = m.loss(src, tgt_in, tgt_out)
            loss.backward()
            opt.step()
            loss.item()
        elif args.mode == "greedy":
            m.greedy(src).cpu()
        else:
            m.beam(src)[0].cpu()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    print("RESULT " + json.dumps({
        "side": "pytorch", "version": torch.__version__, "mode": args.mode, "device": str(dev),
        "threads": torch.get_num_threads(), "params": sum(p.numel() for p in m.parameters()),
        "median_s": statistics.median(times), "runs": len(times), "peak_rss_mb": peak_rss_mb(),
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
