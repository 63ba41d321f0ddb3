#!/usr/bin/env bash
# RLIMIT_AS: the arena and its metadata are sized from what the limit leaves
# (less a margin for the program's own mappings), so a program under
# `ulimit -v` of 200 MB starts and allocates most of what it can under
# glibc, in small blocks and in large ones; and when the program needs
# address space of its own (threads' stacks, a mapping), the arena gives up
# the part of its reservation it has not used.
. "$(dirname "$0")/lib.sh"
child=$top/libmesh/tests/bin/limits_child
(ulimit -v 200000; LD_PRELOAD=$LIBMESH /bin/true) || fail "/bin/true under ulimit -v 200000 exited $?"
out=$(ulimit -v 200000; LD_PRELOAD=$LIBMESH /usr/bin/python3 -c 'x = [bytes(1000) for i in range(50000)]; print(len(x))') ||
    fail "python3 under ulimit -v 200000"
[ "$out" = 50000 ] || fail "python3 printed '$out'"
for size in 1000 100000; do
    glibc=$(ulimit -v 200000; "$child" max $size 100000)
    mesh=$(ulimit -v 200000; LD_PRELOAD=$LIBMESH "$child" max $size 100000)
    echo "blocks of $size bytes under ulimit -v 200000: glibc $glibc MiB, libmesh $mesh MiB"
    [ "$mesh" -ge $((glibc * 3 / 4)) ] || fail "libmesh allocated $mesh MiB of $size-byte blocks, glibc $glibc"
done
rc=0
out=$(ulimit -v 200000; LD_PRELOAD=$LIBMESH "$child" room 12 64 2>&1) || rc=$?
[ $rc -eq 0 ] && [ "$out" = ok ] || fail "12 threads and a 64 MiB mapping under ulimit -v 200000: exit $rc, '$out'"
# The same fits under glibc (one malloc arena: glibc reserves 64 MiB for
# each further arena its threads make, which under this limit fails them
# at random).
out=$(ulimit -v 200000; MALLOC_ARENA_MAX=1 "$child" room 12 64 2>&1) || fail "glibc: $out"
echo ok
