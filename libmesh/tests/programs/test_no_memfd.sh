#!/usr/bin/env bash
# A sandbox that denies memfd_create (a seccomp filter answering EPERM, or
# ENOSYS as for a call the kernel lacks): the heap is private memory,
# meshing is off, and libmesh says so once on stderr and in the MALLOCSTATS
# summary.  Allocation, reuse and fork work as usual.
. "$(dirname "$0")/lib.sh"
bin=$top/libmesh/tests/bin
for errno in 1 38; do
    rc=0
    out=$(MALLOCSTATS=1 LD_PRELOAD=$LIBMESH "$bin/deny_memfd" $errno "$bin/limits_child" alloc 64 1000 2>"$scratch/err") || rc=$?
    cat "$scratch/err"
    [ $rc -eq 0 ] && [ "$out" = ok ] || fail "errno $errno: exit $rc, '$out'"
    [ "$(grep -c '^mesh: memfd_create failed' "$scratch/err")" -eq 1 ] || fail "errno $errno: not said once on stderr"
    grep -q "^mesh: memfd_create failed (errno $errno): the heap is private memory, meshing is off$" "$scratch/err" ||
        fail "errno $errno: the message does not name the cause"
    ran_on_mesh "$scratch/err"
    grep -q '^Meshing off: memfd_create failed' "$scratch/err" || fail "errno $errno: no line in the MALLOCSTATS summary"
done
out=$(LD_PRELOAD=$LIBMESH "$bin/deny_memfd" 1 /usr/bin/python3 -c '
import os
d = {i: str(i) * 30 for i in range(100000)}
pid = os.fork()
if pid == 0:
    d.clear()
    os._exit(0)
os.waitpid(pid, 0)
print(sum(len(v) for v in d.values()))' 2>"$scratch/err2") || fail "python3 without memfd_create"
[ "$out" = "$(/usr/bin/python3 -c 'print(sum(len(str(i) * 30) for i in range(100000)))')" ] || fail "python3 printed '$out'"
echo ok
