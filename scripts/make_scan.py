"""SCAN (Lake & Baroni 2018) regenerated from its grammar; random 80/20 split ("simple")."""
import itertools, random, sys
U = ["walk", "look", "run", "jump"]
ACT = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
TURN = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
def V():
    out = []
    for u in U:
        out.append((u, [ACT[u]]))
    for d in ["left", "right"]:
        t = TURN[d]
        out.append((f"turn {d}", [t]))
        out.append((f"turn opposite {d}", [t, t]))
        out.append((f"turn around {d}", [t] * 4))
        for u in U:
            out.append((f"{u} {d}", [t, ACT[u]]))
            out.append((f"{u} opposite {d}", [t, t, ACT[u]]))
            out.append((f"{u} around {d}", [t, ACT[u]] * 4))
    return out
S = []
for c, a in V():
    S += [(c, a), (c + " twice", a * 2), (c + " thrice", a * 3)]
C = list(S)
for (c1, a1), (c2, a2) in itertools.product(S, S):
    C.append((f"{c1} and {c2}", a1 + a2))
    C.append((f"{c1} after {c2}", a2 + a1))
random.Random(1).shuffle(C)
n = len(C); cut = int(0.8 * n)
out = sys.argv[1]
for name, part in [("train", C[:cut]), ("test", C[cut:])]:
    with open(f"{out}/{name}.in", "w") as f, open(f"{out}/{name}.out", "w") as g:
        for c, a in part:
            f.write(c + "\n"); g.write(" ".join(a) + "\n")
print(n, cut, n - cut, max(len(a) for _, a in C))
