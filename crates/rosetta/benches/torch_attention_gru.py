# The PyTorch peer of `cargo bench -p rosetta --bench vs_pytorch`: the reference attention GRU of
# ../shared/bench/torch_attention_gru.py (BiGRU 2x256 encoder, GRU 512 decoder, Bahdanau attention 512,
# vocab 8000, batch 64 x 25), with the same training and greedy loops, plus a batched beam search and the
# peak RSS. The Rust bench runs it once per mode, each in a fresh process, and compares.
#
#   python3 torch_attention_gru.py train|greedy|beam STEPS [--device cpu|cuda] [--threads N]
#
# Prints one line `RESULT {json}`. End-of-sentence is never chosen (its logit is -inf), so every mode does
# exactly T steps for every row, as the Rust side does: the two sides do the same arithmetic.
import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

B, S, T, V, E, HE, HD, A = 64, 25, 25, 8000, 256, 256, 512, 512
BOS, EOS = 2, 3
BEAM = 5


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.src_emb = nn.Embedding(V, E)
        self.tgt_emb = nn.Embedding(V, E)
        self.enc = nn.GRU(E, HE, batch_first=True, bidirectional=True)
        self.init = nn.Linear(2 * HE, HD)
        self.wk = nn.Linear(2 * HE, A, bias=False)
        self.wq = nn.Linear(HD, A, bias=False)
        self.v = nn.Linear(A, 1, bias=False)
        self.dec = nn.GRUCell(E + 2 * HE, HD)
        self.out = nn.Linear(HD + 2 * HE, V)

    def encode(self, src):
        enc, _ = self.enc(self.src_emb(src))  # [B,S,2HE]
        keys = self.wk(enc)  # [B,S,A]
        h0 = torch.tanh(self.init(enc.mean(1)))  # [B,HD]
        return enc, keys, h0

    def step(self, y_emb, h, enc, keys):
        q = self.wq(h)
        e = self.v(torch.tanh(keys + q.unsqueeze(1))).squeeze(2)  # [B,S]
        alpha = F.softmax(e, dim=1)
        ctx = torch.bmm(alpha.unsqueeze(1), enc).squeeze(1)  # [B,2HE]
        h = self.dec(torch.cat([y_emb, ctx], 1), h)
        return h, torch.cat([h, ctx], 1)

    def loss(self, src, tgt_in, tgt_out):
        enc, keys, h = self.encode(src)
        yemb = self.tgt_emb(tgt_in)
        outs = []
        for t in range(T):
            h, o = self.step(yemb[:, t], h, enc, keys)
            outs.append(o)
        logits = self.out(torch.stack(outs, 1).reshape(B * T, -1))
        return F.cross_entropy(logits, tgt_out.reshape(-1))

    @torch.no_grad()
    def greedy(self, src):
        enc, keys, h = self.encode(src)
        y = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
        ys = []
        for _ in range(T):
            h, o = self.step(self.tgt_emb(y), h, enc, keys)
            logits = self.out(o)
            logits[:, EOS] = float("-inf")
            y = logits.argmax(1)
            ys.append(y)
        return torch.stack(ys, 1)

    @torch.no_grad()
    def beam(self, src, k=BEAM):
        """Batched beam search over log-probabilities: k rows per sentence, top k of k x V each step."""
        n = src.shape[0]
        enc, keys, h = self.encode(src)
        rows = torch.arange(n, device=src.device).repeat_interleave(k)
        enc, keys, h = enc[rows], keys[rows], h[rows]  # [n*k, ...]
        score = torch.full((n, k), float("-inf"), device=src.device)
        score[:, 0] = 0.0  # only the first beam is live at the start
        y = torch.full((n * k,), BOS, dtype=torch.long, device=src.device)
        history = []
        base = (torch.arange(n, device=src.device) * k).unsqueeze(1)
        for _ in range(T):
            h, o = self.step(self.tgt_emb(y), h, enc, keys)
            lp = F.log_softmax(self.out(o), dim=1)
            lp[:, EOS] = float("-inf")
            cand = (score.unsqueeze(2) + lp.view(n, k, V)).view(n, k * V)
            score, idx = cand.topk(k, dim=1)  # [n, k]
            origin = (idx // V + base).view(-1)
            y = (idx % V).view(-1)
            h = h[origin]
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
    result = {
        "side": "pytorch",
        "version": torch.__version__,
        "mode": args.mode,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in m.parameters()),
        "median_s": statistics.median(times),
        "runs": len(times),
        "peak_rss_mb": peak_rss_mb(),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
