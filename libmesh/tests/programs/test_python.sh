#!/usr/bin/env bash
# Python on libmesh: threads sharing and freeing each other's objects, and
# multiprocessing with both the fork and spawn start methods.
. "$(dirname "$0")/lib.sh"
cat >"$scratch/t.py" <<'PY'
import hashlib, multiprocessing as mp, queue, threading

def work(n):
    d = {i: ("x" * (i % 300)) + str(i) for i in range(n)}
    return sum(len(v) for v in d.values())

def producer(q, n):
    for i in range(n):
        q.put(bytearray(i % 2000 + 1))
    q.put(None)

def consumer(q, out):
    total = 0
    while (b := q.get()) is not None:
        total += len(b)
    out.append(total)

if __name__ == "__main__":
    out = []
    qs = [queue.Queue(maxsize=100) for _ in range(4)]
    ts = [threading.Thread(target=producer, args=(q, 20000)) for q in qs]
    ts += [threading.Thread(target=consumer, args=(q, out)) for q in qs]
    for t in ts: t.start()
    for t in ts: t.join()
    print("threads", sum(out))
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(2) as pool:
            print(method, sum(pool.map(work, [20000] * 6)))
    print("sha", hashlib.sha256(b"".join(str(i).encode() for i in range(100000))).hexdigest()[:16])
PY
/usr/bin/python3 "$scratch/t.py" >"$scratch/want"
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH /usr/bin/python3 "$scratch/t.py" >"$scratch/got" 2>"$scratch/err"
ran_on_mesh "$scratch/err"
cat "$scratch/got"
diff "$scratch/want" "$scratch/got" || fail "output differs from glibc's"
