#!/usr/bin/env bash
# RLIMIT_FSIZE below the arena's reservation: the arena file grows with the
# heap and stops short of the limit, the heap goes on in private memory, and
# no SIGXFSZ is ever raised.  Under a 1 MiB limit a program allocates 64 MiB
# (small and large blocks, freed, reused, checked across a fork) as it does
# without one.  test_file_limit.c checks meshing and trimming at the border.
. "$(dirname "$0")/lib.sh"
child=$top/libmesh/tests/bin/limits_child
(ulimit -f 1024; LD_PRELOAD=$LIBMESH /bin/true) || fail "/bin/true under ulimit -f 1024 exited $?"
for size in 1000 100000; do
    rc=0
    out=$(ulimit -f 1024; LD_PRELOAD=$LIBMESH "$child" alloc 64 $size 2>"$scratch/err") || rc=$?
    cat "$scratch/err"
    [ $rc -eq 0 ] && [ "$out" = ok ] || fail "64 MiB of $size-byte blocks under ulimit -f 1024: exit $rc, '$out'"
done
out=$(ulimit -f 1024; LD_PRELOAD=$LIBMESH /usr/bin/python3 -c 'x = [str(i) * 50 for i in range(200000)]; print(len(x))') ||
    fail "python3 under ulimit -f 1024"
[ "$out" = 200000 ] || fail "python3 printed '$out'"
echo ok
